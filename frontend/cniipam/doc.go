// Package cniipam is quilt-ipam, a CNI IPAM plugin (CNI specification 1.1)
// that gives containers their addresses from quilt-runtime's IPAM, so that
// any CNI runtime (containerd, CRI-O, Podman, nerdctl, cnitool) can use
// the node's subnet. A main plugin such as the reference bridge plugin
// delegates to it; it answers ADD, DEL, CHECK, GC, STATUS and VERSION
// through the reference library's skel and types (github.com/
// containernetworking/cni), and asks quilt-runtime's QuiltAdmin service over
// its Unix socket:
//
//   - ADD: AllocateIP for the container ID and interface name, on behalf of
//     the network (its name); the result holds the address with the node
//     subnet's length, the gateway, and a route to the cluster CIDR via the
//     gateway. Repeated, it returns the same address.
//   - DEL: ReleaseIP; an allocation that does not exist is not an error.
//   - CHECK: the allocation exists and is the address of the prevResult.
//   - GC: GarbageCollectIPs with the runtime's valid attachments and the
//     configured grace period.
//   - STATUS: an error (code 50) while quilt-runtime does not answer, its
//     route helper is unavailable, the node has no subnet yet, or the range
//     is exhausted.
//
// Every call has a deadline (Config.Timeout, 2s unless configured): a
// quilt-runtime that is not running, or does not answer, is a CNI error
// with code 11 (try again later) and a message naming the socket, never a
// hang. Bad input gets the specification's codes: 1 for an unsupported
// cniVersion, 2 for an unknown key in the "ipam" object, 4 for a missing
// or invalid CNI_CONTAINERID or CNI_IFNAME, 6 for configuration that is not
// JSON, 7 for a bad value. An exhausted range is code 100, ours.
//
// It needs no privileges beyond connecting to the socket (mode 0660: root,
// or a member of its group). It keeps no state of its own.
package cniipam
