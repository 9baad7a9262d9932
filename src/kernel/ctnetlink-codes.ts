// ctnetlink's numbers (include/uapi/linux/netfilter/nfnetlink_conntrack.h), for the requests
// (conntrack.ts) and the events (conntrack-events.ts) alike.

export const NFNL_SUBSYS_CTNETLINK = 1;
/** Without NLM_F_CREATE: an update of an existing entry; as an event: a new flow. */
export const IPCTNL_MSG_CT_NEW = 0;
export const IPCTNL_MSG_CT_GET = 1;
export const IPCTNL_MSG_CT_DELETE = 2;
/** Multicast groups (enum nfnetlink_groups): bit (group - 1) of nl_groups, or NETLINK_ADD_MEMBERSHIP with the number. */
export const NFNLGRP_CONNTRACK_NEW = 1;
export const NFNLGRP_CONNTRACK_DESTROY = 3;

// enum ctattr_type
export const CTA_TUPLE_ORIG = 1;
export const CTA_TUPLE_REPLY = 2;
export const CTA_STATUS = 3;
export const CTA_MARK = 8;
export const CTA_COUNTERS_ORIG = 9;
export const CTA_COUNTERS_REPLY = 10;
export const CTA_ID = 12;
export const CTA_TIMESTAMP = 20;
export const CTA_MARK_MASK = 21;
// enum ctattr_tuple, ctattr_ip, ctattr_l4proto
export const CTA_TUPLE_IP = 1;
export const CTA_TUPLE_PROTO = 2;
export const CTA_IP_V4_SRC = 1;
export const CTA_IP_V4_DST = 2;
export const CTA_PROTO_NUM = 1;
export const CTA_PROTO_SRC_PORT = 2;
export const CTA_PROTO_DST_PORT = 3;
// enum ctattr_counters, ctattr_tstamp
export const CTA_COUNTERS_PACKETS = 1;
export const CTA_COUNTERS_BYTES = 2;
export const CTA_TIMESTAMP_START = 1;
export const CTA_TIMESTAMP_STOP = 2;

export const AF_INET = 2;
