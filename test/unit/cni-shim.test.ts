// The toastnet-cni executable (cni/toastnet-cni.c, built by npm run build) against a stand-in
// daemon on a Unix socket: which socket it finds, what it forwards, how it turns the answer
// into stdout and an exit code, and what it answers alone (VERSION; 11 and 50 without a
// daemon; 6 for a config that is not JSON). No root, no kernel.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { TOASTNET_CNI } from '../helpers/cni-runtime.js';

interface Run { code: number; out: string }

function run(stdin: string, env: Record<string, string>): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(TOASTNET_CNI, { env: { PATH: process.env.PATH ?? '', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('close', (code) => resolve({ code: code ?? 128, out: out.trim() }));
    p.stdin.end(stdin);
  });
}

describe('toastnet-cni shim', () => {
  let dir: string;
  let server: http.Server;
  let received: { url?: string; body: Record<string, unknown> }[] = [];
  /** What the stand-in daemon answers next. */
  let answer: { status: number; body?: string } = { status: 200, body: '{}' };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tn-shim-'));
    server = http.createServer((req, res) => {
      let data = '';
      req.on('data', (d) => (data += d));
      req.on('end', () => {
        received.push({ url: req.url, body: JSON.parse(data) as Record<string, unknown> });
        if (answer.body === undefined) res.writeHead(answer.status).end();
        else res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body);
      });
    });
    await new Promise<void>((r) => server.listen(path.join(dir, 'toastnet.sock'), r));
  });
  after(() => {
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const conf = (extra: Record<string, unknown> = {}) => JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'toastnet-cni', runDir: dir, ...extra });

  it('answers VERSION itself', async () => {
    const r = await run('{"cniVersion":"0.4.0"}', { CNI_COMMAND: 'VERSION' });
    assert.equal(r.code, 0);
    assert.deepEqual(JSON.parse(r.out), { cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });

  it('forwards the call to <runDir>/toastnet.sock and prints the result', async () => {
    received = [];
    answer = { status: 200, body: '{"cniVersion":"1.0.0","ips":[]}' };
    const text = conf({ prevResult: { runDir: '/nowhere' }, note: 'a "quoted" \\ value\n' });
    const r = await run(text, { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/proc/7/ns/net', CNI_IFNAME: 'eth0', CNI_ARGS: 'K8S_POD_NAME=x', CNI_PATH: '/opt/cni/bin' });
    assert.equal(r.code, 0);
    assert.deepEqual(JSON.parse(r.out), { cniVersion: '1.0.0', ips: [] });
    assert.equal(received[0].url, '/v1/cni');
    assert.deepEqual(received[0].body, { command: 'ADD', containerId: 'c1', netns: '/proc/7/ns/net', ifname: 'eth0', args: 'K8S_POD_NAME=x', path: '/opt/cni/bin', config: text });
  });

  it('an answer without output exits 0 silently; the daemon\'s error object exits 1 as is', async () => {
    answer = { status: 204 };
    assert.deepEqual(await run(conf(), { CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c1', CNI_IFNAME: 'eth0' }), { code: 0, out: '' });
    answer = { status: 400, body: '{"cniVersion":"1.0.0","code":7,"msg":"bad"}' };
    const r = await run(conf(), { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/x', CNI_IFNAME: 'eth0' });
    assert.equal(r.code, 1);
    assert.deepEqual(JSON.parse(r.out), { cniVersion: '1.0.0', code: 7, msg: 'bad' });
    answer = { status: 500, body: '{"error":{"code":"internal","message":"boom"}}' };
    const other = await run(conf(), { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/x', CNI_IFNAME: 'eth0' });
    assert.equal(other.code, 1);
    assert.equal(JSON.parse(other.out).code, 11);
    assert.match(JSON.parse(other.out).msg, /HTTP 500.*boom/);
  });

  it('finds the socket from TOASTNET_RUN_DIR when the config names none', async () => {
    received = [];
    answer = { status: 204 };
    const r = await run(JSON.stringify({ cniVersion: '1.1.0', name: 'n' }), { CNI_COMMAND: 'STATUS', TOASTNET_RUN_DIR: dir });
    assert.equal(r.code, 0);
    assert.equal(received.length, 1);
  });

  it('without a daemon: 11 (try again later), 50 for STATUS, in the config\'s version, naming the socket', async () => {
    const none = path.join(dir, 'none');
    const add = await run(JSON.stringify({ cniVersion: '0.4.0', name: 'n', runDir: none }), { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c', CNI_NETNS: '/x', CNI_IFNAME: 'eth0' });
    assert.equal(add.code, 1);
    const e = JSON.parse(add.out);
    assert.deepEqual([e.cniVersion, e.code], ['0.4.0', 11]);
    assert.match(e.msg, new RegExp(`daemon is not running \\(${none}/toastnet.sock`));
    const st = await run(JSON.stringify({ cniVersion: '1.1.0', name: 'n', instance: 'nosuchinst' }), { CNI_COMMAND: 'STATUS' });
    assert.equal(JSON.parse(st.out).code, 50);
    assert.match(JSON.parse(st.out).msg, /\/run\/toastnet\/nosuchinst\/toastnet.sock/);
  });

  it('refuses a config that is not a JSON object (6) and a missing CNI_COMMAND (4)', async () => {
    assert.equal(JSON.parse((await run('not json', { CNI_COMMAND: 'ADD' })).out).code, 6);
    assert.equal(JSON.parse((await run('{"cniVersion":"1.0.0"} trailing', { CNI_COMMAND: 'ADD' })).out).code, 6);
    assert.equal(JSON.parse((await run(conf(), {})).out).code, 4);
  });
});
