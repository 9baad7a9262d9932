// Address space a sandbox never reaches unless the operator or its policy opens it.
export const METADATA_ADDRESS = '169.254.169.254';

/**
 * Destinations a sandbox never reaches unless the operator or its policy opens them:
 * "this network", RFC 1918 private space, shared address space (CGNAT), loopback,
 * link-local (cloud metadata at 169.254.169.254), IETF protocol assignments, benchmarking,
 * multicast, and reserved space including the limited broadcast address.
 */
export const DENIED_RANGES = [
  '0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12',
  '192.0.0.0/24', '192.168.0.0/16', '198.18.0.0/15', '224.0.0.0/4', '240.0.0.0/4',
];
