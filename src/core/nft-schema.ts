// The shapes the core hands to the kernel layer: libnftables JSON commands, and the key
// types of the per-sandbox sets (which the nfnetlink codec, kernel/nft-set-codec.ts, needs
// to send element changes without libnftables). Types and one naming rule, nothing more.

/** One libnftables JSON command ({ add: { rule: ... } }, { delete: { element: ... } }, ...). */
export type NftCommand = Record<string, unknown>;

/** Set key types the per-sandbox sets use. */
export type KeyType = 'ipv4_addr' | 'ether_addr' | 'ifname' | 'inet_proto' | 'inet_service';

/**
 * What the codec needs to know of a set: its key fields, what a map maps to (a verdict, a
 * named object, or a value of one key type), whether it holds ranges.
 */
export interface SetSchema {
  key: KeyType[];
  data?: 'verdict' | 'objref' | { value: KeyType };
  interval?: boolean;
}

/** Schemas by `${family} ${table} ${set}`. */
export type SetSchemas = ReadonlyMap<string, SetSchema>;
export const schemaKey = (family: string, table: string, set: string): string => `${family} ${table} ${set}`;
