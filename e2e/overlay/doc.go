// Package overlay builds a three-node Quilt cluster out of network
// namespaces on this machine and proves, over TCP, that containers on
// different nodes reach each other because the routes quilt-runtime
// installs are right, and stop reaching each other when they should.
//
// What it makes (all names start with "qov<pid>-", so they are unique per
// run and a later run can sweep what a killed run left behind):
//
//   - an underlay: one namespace holding a bridge, br0, with a veth to each
//     node; nodes get 192.0.2.N/24 (TEST-NET-1, RFC 5737) on their eth0;
//   - per node, a namespace with vxlan100 (VNI 100, UDP 4789, nolearning,
//     local 192.0.2.N), a container bridge quilt0 with the node's gateway
//     10.42.N.1/24, forwarding on, proxy ARP on vxlan100, strict rp_filter;
//   - per node, the real quilt-route-helper with CAP_NET_ADMIN alone and
//     the real quilt-runtime as an unprivileged uid (started with setpriv),
//     each with its own socket and state directory;
//   - per container, a namespace with a veth into quilt0, an address from
//     the node's IPAM (QuiltAdmin.AllocateIP) and a default route via the
//     gateway, running a small TCP echo server;
//   - an agent stand-in that calls QuiltRuntime over gRPC as the Quilt Mesh
//     agent does, and writes the all-zero VXLAN FDB entries itself;
//   - per node, a container made as a CNI runtime makes it: the reference
//     cnitool runs the reference bridge plugin on quilt0 with quilt-ipam
//     (Config.IPAMBin, Config.CNIBin), against the frontend's Unix socket;
//     cnitool's result cache is the run's directory, mounted over /var/lib
//     in a mount namespace of its own.
//
// Run drives the scenario step by step and checks each step against the
// kernel and against real TCP connections; the e2e test and the quilt-demo
// command both use it.
//
// Privileges: root (namespaces, setpriv, uid switches). Nothing is done in
// the caller's own network namespace, and no packet leaves the namespaces
// this package makes. Close removes every namespace, interface and process,
// and Run always calls it, also when a step fails or ctx is cancelled (for
// example by SIGINT or SIGTERM, when the caller ties ctx to them).
//
// Names: namespaces are qov<pid>-underlay, qov<pid>-node1..3 and
// qov<pid>-node1-a and so on; inspect a running one with
// `ip -n qov<pid>-node1 route`.
package overlay
