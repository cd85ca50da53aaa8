package cniipam

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// CodeExhausted is the error code of an ADD refused because every address
// of the node's range is allocated (CNI leaves 100 and up to plugins).
const CodeExhausted uint = 100

// Versions are the CNI specification versions the plugin speaks; CHECK
// needs 0.4.0, GC and STATUS 1.1.0.
var Versions = version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

// Plugin carries out the CNI commands. Results go to Stdout.
type Plugin struct {
	Stdout io.Writer
}

// Funcs are the commands, for skel.PluginMainFuncs.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Del: p.Del, Check: p.Check, GC: p.GC, Status: p.Status}
}

// Main runs the plugin as the runtime invokes it: the command in the
// environment, the configuration on stdin, the result or error on stdout.
func Main(buildVersion string) {
	p := &Plugin{Stdout: os.Stdout}
	skel.PluginMainFuncs(p.Funcs(), Versions, "quilt-ipam "+buildVersion+": CNI IPAM plugin of quilt-runtime (CNI "+current.ImplementedSpecVersion+")")
}

// key checks the container ID and interface name the runtime passed: skel
// requires them; these are quilt-runtime's own rules, which are narrower
// (a length bound on IDs, printable ASCII names).
func key(args *skel.CmdArgs) (ipam.Key, error) {
	k := ipam.Key{ContainerID: args.ContainerID, Ifname: args.IfName}
	if args.IfName == "" {
		return k, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_IFNAME is empty: quilt-ipam allocates per container and interface", "")
	}
	if err := k.Check(); err != nil {
		return k, types.NewError(types.ErrInvalidEnvironmentVariables, "CNI_CONTAINERID or CNI_IFNAME: "+err.Error(), "")
	}
	return k, nil
}

// Add gives the container's interface its address.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, cfg, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	k, err := key(args)
	if err != nil {
		return err
	}
	var resp *quiltpb.AllocateIPResponse
	err = call(cfg, "AllocateIP", func(ctx context.Context, c quiltpb.QuiltAdminClient) (err error) {
		resp, err = c.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: k.ContainerID, InterfaceName: k.Ifname, Network: conf.Name})
		return err
	})
	if err != nil {
		return err
	}
	res, err := result(resp)
	if err != nil {
		return types.NewError(types.ErrInternal, "quilt-runtime's answer to AllocateIP", err.Error())
	}
	out, err := res.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, "result as CNI "+conf.CNIVersion, err.Error())
	}
	return out.PrintTo(p.Stdout)
}

// result turns AllocateIP's answer into a CNI result: the address with
// the subnet's length, the gateway, and the cluster CIDR via the gateway.
func result(r *quiltpb.AllocateIPResponse) (*current.Result, error) {
	ip, err := netip.ParseAddr(r.Ip)
	gw, gerr := netip.ParseAddr(r.Gateway)
	cluster, cerr := netip.ParsePrefix(r.ClusterCidr)
	if err = errors.Join(err, gerr, cerr); err != nil {
		return nil, err
	}
	return &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		IPs:        []*current.IPConfig{{Address: net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(int(r.PrefixLength), 32)}, Gateway: gw.AsSlice()}},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: cluster.Addr().AsSlice(), Mask: net.CIDRMask(cluster.Bits(), 32)}, GW: gw.AsSlice()}},
	}, nil
}

// Del releases the interface's address; one that has none is not an
// error.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	_, cfg, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	k, err := key(args)
	if err != nil {
		return err
	}
	return call(cfg, "ReleaseIP", func(ctx context.Context, c quiltpb.QuiltAdminClient) error {
		_, err := c.ReleaseIP(ctx, &quiltpb.ReleaseIPRequest{ContainerId: k.ContainerID, InterfaceName: k.Ifname})
		return err
	})
}

// Check reports an error unless the interface has its allocation and it
// is the address of the prevResult.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, cfg, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	k, err := key(args)
	if err != nil {
		return err
	}
	var list *quiltpb.ListAllocationsResponse
	err = call(cfg, "ListAllocations", func(ctx context.Context, c quiltpb.QuiltAdminClient) (err error) {
		list, err = c.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{ContainerId: k.ContainerID})
		return err
	})
	if err != nil {
		return err
	}
	var have string
	for _, al := range list.Allocations {
		if al.InterfaceName == k.Ifname {
			have = al.Ip
		}
	}
	if have == "" {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("container %s interface %s has no address from quilt-runtime", k.ContainerID, k.Ifname), "")
	}
	if conf.PrevResult == nil {
		return nil
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
	}
	for _, ipc := range prev.IPs {
		if ipc.Address.IP.String() == have {
			return nil
		}
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("container %s interface %s has %s from quilt-runtime, not an address of the prevResult", k.ContainerID, k.Ifname, have), "")
}

// GC releases the network's allocations the runtime no longer lists, once
// older than the grace period.
func (p *Plugin) GC(args *skel.CmdArgs) error {
	conf, cfg, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	req := &quiltpb.GarbageCollectIPsRequest{Network: conf.Name, GraceSeconds: cfg.GCGrace.Seconds()}
	for _, a := range conf.ValidAttachments {
		req.Valid = append(req.Valid, &quiltpb.Attachment{ContainerId: a.ContainerID, InterfaceName: a.IfName})
	}
	return call(cfg, "GarbageCollectIPs", func(ctx context.Context, c quiltpb.QuiltAdminClient) error {
		_, err := c.GarbageCollectIPs(ctx, req)
		return err
	})
}

// Status reports whether an ADD could succeed now.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	_, cfg, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	var st *quiltpb.GetStatusResponse
	err = call(cfg, "GetStatus", func(ctx context.Context, c quiltpb.QuiltAdminClient) (err error) {
		st, err = c.GetStatus(ctx, &quiltpb.GetStatusRequest{})
		return err
	})
	var te *types.Error
	switch {
	case errors.As(err, &te):
		te.Code = types.ErrPluginNotAvailable
		return te
	case !st.HelperAvailable:
		return types.NewError(types.ErrPluginNotAvailable, "quilt-runtime's route helper is unavailable: "+st.HelperError, "")
	case st.Subnet == "":
		return types.NewError(types.ErrPluginNotAvailable, "the node has no subnet yet: the Quilt Mesh agent's ConfigureNodeSubnet comes first", "")
	case st.Allocations >= st.Capacity:
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("the node's range is exhausted: %d of %d addresses of %s allocated", st.Allocations, st.Capacity, st.Subnet), "")
	}
	return nil
}

// call dials quilt-runtime's socket and makes one call within the
// configured deadline; its errors are *types.Error.
func call(cfg Config, rpc string, f func(context.Context, quiltpb.QuiltAdminClient) error) error {
	conn, err := grpc.NewClient("unix://"+cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("ipam \"socket\" %q", cfg.Socket), err.Error())
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Timeout)
	defer cancel()
	if err := f(ctx, quiltpb.NewQuiltAdminClient(conn)); err != nil {
		return rpcError(cfg, rpc, err)
	}
	return nil
}

// rpcError maps a gRPC failure to a CNI error: quilt-runtime not reachable
// or not ready is "try again later" (11), a full range ours (100).
func rpcError(cfg Config, rpc string, err error) *types.Error {
	st := status.Convert(err)
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("quilt-runtime on %s did not answer %s within %v: is it running, and may this user open the socket?", cfg.Socket, rpc, cfg.Timeout), msg)
	case codes.FailedPrecondition:
		return types.NewError(types.ErrTryAgainLater, msg, "")
	case codes.ResourceExhausted:
		return types.NewError(CodeExhausted, msg, "")
	case codes.InvalidArgument:
		return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
	case codes.Unimplemented:
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("quilt-runtime on %s does not serve %s: upgrade it", cfg.Socket, rpc), msg)
	}
	return types.NewError(types.ErrInternal, fmt.Sprintf("quilt-runtime on %s: %s: %s", cfg.Socket, rpc, st.Code()), msg)
}
