// What nsjail's --macvlan_iface does: a macvlan child (private mode: children never see each
// other's frames) of the instance's parent link, made directly inside the sandbox's
// namespace. The host reaches all of them through the gateway link; the pair (MAC, address)
// is what tells them apart there (see core/names.ts, sandboxMac).
import { ToastnetError } from '../../errors.js';
import * as rq from '../rtnl-requests.js';
import type { LinkDriver } from './driver.js';
import { addressEnd } from './address-end.js';

export const macvlanDriver: LinkDriver = {
  make(host, s, end): void {
    if (s.parentIndex === undefined) throw new ToastnetError('not_ready', 'macvlan parent link missing: run `toastnet up`');
    host.exec([rq.newMacvlan(s.parentIndex, end)], ['create macvlan']);
  },
  configureInside: addressEnd,
  // Nothing on the host side but the parent, which all macvlan sandboxes share.
  removeHostSide(): void {},
  present(): boolean {
    return true;
  },
  describeHost() {
    return { hostRoutes: [] };
  },
};
