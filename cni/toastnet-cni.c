/*
 * toastnet-cni: the CNI plugin executable. A runtime executes a plugin once per call, so
 * its start-up is on the runtime's critical path: Node takes ~80 ms to start on these
 * machines, a static C program ~1 ms. This shim therefore does no networking of its own:
 * it forwards the call (CNI_* environment and the network config from stdin) to the
 * toastnet daemon as one HTTP request on the daemon's Unix socket, and writes the daemon's
 * answer to stdout with the matching exit code. The daemon does the work (src/service/cni.ts).
 *
 * The socket is <runDir>/toastnet.sock, runDir being, in order: the config's "runDir", the
 * environment's TOASTNET_RUN_DIR, /run/toastnet/<instance> with instance from the config's
 * "instance", TOASTNET_INSTANCE, or "toastnet" (the CLI's defaults).
 *
 * Answered here without the daemon: VERSION; and when the daemon does not answer, the
 * spec's error 11 ("try again later") for ADD/DEL/CHECK/GC, 50 ("not available") for STATUS.
 *
 * Built static where the libc allows (npm run build falls back to dynamic): like the
 * reference plugins, it can then be copied onto any node's plugin directory, and it starts
 * without the dynamic loader. It needs nothing but the C library: no JSON library (the
 * config is forwarded verbatim; only two top-level strings are read), no HTTP library (one
 * request, Connection: close).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define SUPPORTED "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]"
/* A network config with a prevResult is a few KiB; the daemon refuses bodies over 1 MiB. */
#define MAX_CONF (512 * 1024)
/* ADD waits behind other calls on the daemon's one thread: generous, but never forever. */
#define IO_TIMEOUT_S 60

struct buf { char *p; size_t n, cap; };

static void put(struct buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->p = realloc(b->p, b->cap);
    if (!b->p) { perror("toastnet-cni"); exit(1); }
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* s as a JSON string (quoted, escaped); NULL as "". */
static void put_json_string(struct buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  put(b, "\"", 1);
  for (size_t i = 0; s && i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; put(b, e, 2); }
    else if (c < 0x20) { char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]}; put(b, e, 6); }
    else put(b, (const char *)&c, 1);
  }
  put(b, "\"", 1);
}

static const char *version_of(const char *conf);

/* The spec's error object on stdout, and exit 1. */
static void fail(const char *conf, int code, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  struct buf out = {0};
  puts_(&out, "{\"cniVersion\":");
  const char *v = conf ? version_of(conf) : NULL;
  put_json_string(&out, v ? v : "1.0.0", v ? strlen(v) : 5);
  char c[32];
  snprintf(c, sizeof c, ",\"code\":%d,\"msg\":", code);
  puts_(&out, c);
  put_json_string(&out, msg, strlen(msg));
  puts_(&out, "}\n");
  fwrite(out.p, 1, out.n, stdout);
  exit(1);
}

/* ---- a minimal JSON reader: the string value of one top-level key ------------------- */

static const char *ws(const char *p) { while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++; return p; }

/* Past a JSON string starting at p (on its quote); copies its text (simple escapes only) if out. */
static const char *str_end(const char *p, char *out, size_t outlen) {
  size_t o = 0;
  for (p++; *p && *p != '"'; p++) {
    char c = *p;
    if (c == '\\') {
      p++;
      if (!*p) return NULL;
      c = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p; /* \uXXXX kept raw: keys and paths are ASCII */
    }
    if (out && o + 1 < outlen) out[o++] = c;
  }
  if (out && outlen) out[o] = 0;
  return *p == '"' ? p + 1 : NULL;
}

/* Past any JSON value starting at p. */
static const char *value_end(const char *p) {
  p = ws(p);
  if (*p == '"') return str_end(p, NULL, 0);
  if (*p == '{' || *p == '[') {
    int depth = 0;
    while (*p) {
      if (*p == '"') { p = str_end(p, NULL, 0); if (!p) return NULL; continue; }
      if (*p == '{' || *p == '[') depth++;
      else if (*p == '}' || *p == ']') { if (--depth == 0) return p + 1; }
      p++;
    }
    return NULL;
  }
  while (*p && *p != ',' && *p != '}' && *p != ']') p++; /* number, true, false, null */
  return p;
}

/* The string value of top-level `key` into out; 1 if found, 0 otherwise (or not a string). */
static int top_string(const char *json, const char *key, char *out, size_t outlen) {
  const char *p = ws(json);
  if (*p != '{') return 0;
  p = ws(p + 1);
  char k[64];
  while (*p == '"') {
    p = str_end(p, k, sizeof k);
    if (!p) return 0;
    p = ws(p);
    if (*p != ':') return 0;
    p = ws(p + 1);
    if (strcmp(k, key) == 0 && *p == '"') return str_end(p, out, outlen) != NULL;
    p = value_end(p);
    if (!p) return 0;
    p = ws(p);
    if (*p == ',') p = ws(p + 1);
  }
  return 0;
}

static const char *version_of(const char *conf) {
  static char v[32];
  return top_string(conf, "cniVersion", v, sizeof v) ? v : NULL;
}

/* ---- the daemon ------------------------------------------------------------------------ */

static void socket_path(const char *conf, char *out, size_t outlen) {
  char dir[256], inst[64];
  const char *env;
  if (top_string(conf, "runDir", dir, sizeof dir) && dir[0]) snprintf(out, outlen, "%s/toastnet.sock", dir);
  else if ((env = getenv("TOASTNET_RUN_DIR")) && env[0]) snprintf(out, outlen, "%s/toastnet.sock", env);
  else {
    if (!top_string(conf, "instance", inst, sizeof inst) || !inst[0]) {
      env = getenv("TOASTNET_INSTANCE");
      snprintf(inst, sizeof inst, "%s", env && env[0] ? env : "toastnet");
    }
    snprintf(out, outlen, "/run/toastnet/%s/toastnet.sock", inst);
  }
}

/* A chunked body decoded in place (the daemon sends Content-Length; other servers may not). */
static void dechunk(char *body) {
  char *in = body, *out = body;
  for (;;) {
    char *end;
    unsigned long n = strtoul(in, &end, 16);
    char *line = strstr(end, "\r\n");
    if (!line || n == 0) break;
    in = line + 2;
    if (strlen(in) < n) n = strlen(in);
    memmove(out, in, n);
    out += n;
    in += n;
    if (in[0] == '\r' && in[1] == '\n') in += 2;
  }
  *out = 0;
}

static void add_env(struct buf *b, const char *field, const char *var) {
  const char *v = getenv(var);
  if (!v) return;
  put(b, ",", 1);
  put_json_string(b, field, strlen(field));
  put(b, ":", 1);
  put_json_string(b, v, strlen(v));
}

int main(void) {
  const char *cmd = getenv("CNI_COMMAND");
  struct buf conf = {0};
  char chunk[16384];
  ssize_t r;
  puts_(&conf, "");
  while ((r = read(0, chunk, sizeof chunk)) > 0) {
    put(&conf, chunk, (size_t)r);
    if (conf.n > MAX_CONF) fail(NULL, 7, "network config over %d bytes", MAX_CONF);
  }
  if (!cmd || !cmd[0]) fail(conf.p, 4, "CNI_COMMAND is not set");
  /* Which daemon to ask is in the config: one that is not a JSON object is the caller's error. */
  const char *start = ws(conf.p), *end = *start == '{' ? value_end(start) : NULL;
  if (!end || *ws(end)) fail(NULL, 6, "the network config on stdin is not a JSON object");
  if (strcmp(cmd, "VERSION") == 0) {
    const char *v = version_of(conf.p);
    printf("{\"cniVersion\":\"%s\",\"supportedVersions\":" SUPPORTED "}\n", v ? v : "1.1.0");
    return 0;
  }
  int is_status = strcmp(cmd, "STATUS") == 0;

  struct buf body = {0};
  puts_(&body, "{\"command\":");
  put_json_string(&body, cmd, strlen(cmd));
  add_env(&body, "containerId", "CNI_CONTAINERID");
  add_env(&body, "netns", "CNI_NETNS");
  add_env(&body, "ifname", "CNI_IFNAME");
  add_env(&body, "args", "CNI_ARGS");
  add_env(&body, "path", "CNI_PATH");
  puts_(&body, ",\"config\":");
  put_json_string(&body, conf.p, conf.n);
  puts_(&body, "}");

  char path[320];
  socket_path(conf.p, path, sizeof path);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) fail(conf.p, 7, "socket path %s is too long", path);
  strcpy(sa.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(conf.p, 5, "socket: %s", strerror(errno));
  struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    fail(conf.p, is_status ? 50 : 11, "the toastnet daemon is not running (%s: %s); start it with `toastnet daemon` (or its systemd unit) and try again",
         path, strerror(errno));
  }

  struct buf req = {0};
  char head[256];
  snprintf(head, sizeof head, "POST /v1/cni HTTP/1.1\r\nHost: toastnet\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", body.n);
  puts_(&req, head);
  put(&req, body.p, body.n);
  for (size_t off = 0; off < req.n;) {
    ssize_t w = send(fd, req.p + off, req.n - off, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(conf.p, is_status ? 50 : 11, "sending to the toastnet daemon at %s: %s", path, strerror(errno));
    }
    off += (size_t)w;
  }
  struct buf resp = {0};
  puts_(&resp, "");
  while ((r = read(fd, chunk, sizeof chunk)) != 0) {
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(conf.p, 11, "reading the toastnet daemon's answer: %s", strerror(errno));
    }
    put(&resp, chunk, (size_t)r);
  }
  close(fd);

  /* "HTTP/1.1 200 OK\r\n...\r\n\r\nBODY": 200 is success with output, 204 without; anything else an error whose body
     is the spec's error object when the daemon's CNI handler wrote it. */
  int status = 0;
  if (sscanf(resp.p, "HTTP/1.%*d %d", &status) != 1) fail(conf.p, 11, "the toastnet daemon gave no HTTP answer");
  char *payload = strstr(resp.p, "\r\n\r\n");
  if (payload) {
    *payload = 0; /* headers end here */
    int chunked = strcasestr(resp.p, "\r\ntransfer-encoding: chunked") != NULL;
    payload += 4;
    if (chunked) dechunk(payload);
  } else {
    payload = resp.p + resp.n;
  }
  if (status == 204) return 0;
  if (status == 200) {
    printf("%s\n", payload);
    return 0;
  }
  char msg[8];
  if (top_string(payload, "msg", msg, sizeof msg) || strstr(payload, "\"msg\"")) {
    printf("%s\n", payload);
    return 1;
  }
  fail(conf.p, 11, "the toastnet daemon answered HTTP %d: %.300s", status, payload);
  return 1;
}
