// Command quiltctl calls a quilt-runtime: the agent's QuiltRuntime service
// and the operators' QuiltAdmin service. See `quiltctl --help`.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/frontend/api"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// version is set at build time (make build: -X main.version=...).
var version = "dev"

func main() {
	app := newApp(os.Stdout, os.Stderr)
	if err := app.Run(os.Args); err != nil {
		os.Exit(exitCode(err, os.Stderr))
	}
}

// exitCode prints err and returns the exit status: 1 when the server
// said no (success=false or a gRPC error), 2 for a usage error.
func exitCode(err error, stderr io.Writer) int {
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(stderr, "quiltctl:", msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintln(stderr, "quiltctl:", err)
	return 2
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:    "quiltctl",
		Version: version,
		Usage:   "call a quilt-runtime: the agent's route API and the operators' admin API",
		Description: `Flags go before a command's argument. Examples:

   quiltctl configure-subnet 10.42.1.0/24
   quiltctl inject-route 10.42.2.0/24 vxlan100
   quiltctl remove-route 10.42.2.0/24
   quiltctl routes
   quiltctl apply-routes +10.42.2.0/24 vxlan100 -10.42.3.0/24
   quiltctl sync-routes -f peers.txt
   quiltctl allocate web-1
   quiltctl -o json allocations
   quiltctl status
   quiltctl --addr unix:///run/quilt/runtime.sock health
   quiltctl --addr node1:50051 --tls-ca ca.pem --tls-cert me.pem --tls-key me-key.pem status

It exits 0 on success, 1 when the server refuses (success=false, or a gRPC
error), with the error on standard error, and 2 on a usage error.
Shell completion: source <(quiltctl completion bash)`,
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {}, // main prints and exits

		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:50051", EnvVars: []string{"QUILT_ADDR"}, Usage: "server: host:port, unix:///path or vsock://CID:PORT"},
			&cli.StringFlag{Name: "tls-ca", EnvVars: []string{"QUILT_TLS_CA"}, Usage: "verify the server with this CA (PEM); enables TLS"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"QUILT_TLS_CERT"}, Usage: "client certificate (PEM), for mTLS; enables TLS"},
			&cli.StringFlag{Name: "tls-key", EnvVars: []string{"QUILT_TLS_KEY"}, Usage: "the client certificate's key (PEM)"},
			&cli.StringFlag{Name: "tls-server-name", Usage: "expect this name in the server's certificate (default: the host of --addr)"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "deadline of the call"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "text", Usage: "text or json"},
			&cli.BoolFlag{Name: "generate-man-page", Hidden: true, Usage: "print the man page, quiltctl(1), made from these flags and commands, and exit"},
		},
		Before: func(cc *cli.Context) error {
			if cc.Bool("generate-man-page") {
				page, err := cc.App.ToManWithSection(1)
				if err == nil {
					_, err = fmt.Fprint(cc.App.Writer, page)
				}
				if err != nil {
					return err
				}
				return cli.Exit("", 0)
			}
			if o := cc.String("output"); o != "text" && o != "json" {
				return fmt.Errorf("--output %q: want text or json", o)
			}
			return nil
		},
		Commands: []*cli.Command{
			{Name: "configure-subnet", ArgsUsage: "SUBNET", Usage: "set this node's container subnet (ConfigureNodeSubnet)",
				Description: "Example: quiltctl configure-subnet 10.42.1.0/24",
				Action: agent(1, func(ctx context.Context, c quiltpb.QuiltRuntimeClient, cc *cli.Context) (answer, error) {
					return c.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: cc.Args().First()})
				})},
			{Name: "inject-route", ArgsUsage: "DESTINATION [INTERFACE]", Usage: "route a peer node's subnet through the overlay (InjectRoute)",
				Description: "Example: quiltctl inject-route 10.42.2.0/24 vxlan100\n" +
					"   The interface is the second argument, as in the RPC, or --via; without either, vxlan100.",
				Flags: []cli.Flag{&cli.StringFlag{Name: "via", Value: "vxlan100", Usage: "interface (or give it after the destination)"}},
				Action: func(cc *cli.Context) error {
					ifname, err := via(cc, cc.Args().Get(1))
					if err != nil {
						return err
					}
					return agent(2, func(ctx context.Context, c quiltpb.QuiltRuntimeClient, cc *cli.Context) (answer, error) {
						return c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: cc.Args().First(), ViaInterface: ifname})
					})(cc)
				}},
			{Name: "remove-route", ArgsUsage: "DESTINATION", Usage: "remove the route to a peer node's subnet (RemoveRoute)",
				Description: "Example: quiltctl remove-route 10.42.2.0/24",
				Action: agent(1, func(ctx context.Context, c quiltpb.QuiltRuntimeClient, cc *cli.Context) (answer, error) {
					return c.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: cc.Args().First()})
				})},
			{Name: "apply-routes", ArgsUsage: "+DESTINATION [INTERFACE] | -DESTINATION ...", Usage: "add (+) and remove (-) many routes in one call (ApplyRoutes)",
				Description: "Example: quiltctl apply-routes +10.42.2.0/24 vxlan100 +10.42.3.0/24 -10.42.4.0/24\n" +
					"   An add's interface follows its destination, or is --via; without either, vxlan100.\n" +
					"   With -f FILE (- for standard input), one change per line in the same form.",
				Flags: batchFlags,
				Action: func(cc *cli.Context) error {
					changes, err := readChanges(cc, true)
					if err != nil {
						return err
					}
					return batch(cc, func(ctx context.Context, c quiltpb.QuiltAdminClient) (*quiltpb.ApplyRoutesResponse, error) {
						st, err := c.ApplyRoutes(ctx)
						for i := 0; err == nil && i < len(changes); i += api.MaxChangesPerMessage {
							err = st.Send(&quiltpb.ApplyRoutesRequest{Changes: changes[i:min(len(changes), i+api.MaxChangesPerMessage)]})
						}
						if err != nil {
							return nil, err
						}
						return st.CloseAndRecv()
					})
				}},
			{Name: "sync-routes", ArgsUsage: "DESTINATION [INTERFACE] ...", Usage: "declare the complete set of peer routes; others are removed (SyncRoutes)",
				Description: "Example: quiltctl sync-routes 10.42.2.0/24 vxlan100 10.42.3.0/24\n" +
					"   A route's interface follows its destination, or is --via; without either, vxlan100.\n" +
					"   With -f FILE (- for standard input), one route per line in the same form. No destination at all removes every route.",
				Flags: batchFlags,
				Action: func(cc *cli.Context) error {
					routes, err := readChanges(cc, false)
					if err != nil {
						return err
					}
					return batch(cc, func(ctx context.Context, c quiltpb.QuiltAdminClient) (*quiltpb.ApplyRoutesResponse, error) {
						st, err := c.SyncRoutes(ctx)
						for i := 0; err == nil && i < len(routes); i += api.MaxChangesPerMessage {
							err = st.Send(&quiltpb.SyncRoutesRequest{Routes: routes[i:min(len(routes), i+api.MaxChangesPerMessage)]})
						}
						if err != nil {
							return nil, err
						}
						return st.CloseAndRecv()
					})
				}},
			{Name: "routes", Usage: "desired routes beside the kernel's, and which differ (ListRoutes)",
				Action: admin(0, func(ctx context.Context, c quiltpb.QuiltAdminClient, cc *cli.Context) (proto.Message, error) {
					return c.ListRoutes(ctx, &quiltpb.ListRoutesRequest{})
				})},
			{Name: "allocate", ArgsUsage: "CONTAINER_ID", Usage: "give a container (or one of its interfaces) an address from this node's subnet (AllocateIP)",
				Description: "Example: quiltctl allocate web-1   prints 10.42.1.10/24 gateway 10.42.1.1\n" +
					"   quiltctl allocate --interface eth1 web-1   gives web-1's eth1 an address of its own",
				Flags: []cli.Flag{interfaceFlag},
				Action: admin(1, func(ctx context.Context, c quiltpb.QuiltAdminClient, cc *cli.Context) (proto.Message, error) {
					return c.AllocateIP(ctx, &quiltpb.AllocateIPRequest{ContainerId: cc.Args().First(), InterfaceName: cc.String("interface")})
				})},
			{Name: "release", ArgsUsage: "CONTAINER_ID", Usage: "return a container's (or an interface's) address (ReleaseIP)",
				Flags: []cli.Flag{interfaceFlag},
				Action: admin(1, func(ctx context.Context, c quiltpb.QuiltAdminClient, cc *cli.Context) (proto.Message, error) {
					return c.ReleaseIP(ctx, &quiltpb.ReleaseIPRequest{ContainerId: cc.Args().First(), InterfaceName: cc.String("interface")})
				})},
			{Name: "allocations", Usage: "list the live allocations, with each one's interface and CNI network (ListAllocations)",
				Action: admin(0, func(ctx context.Context, c quiltpb.QuiltAdminClient, cc *cli.Context) (proto.Message, error) {
					return c.ListAllocations(ctx, &quiltpb.ListAllocationsRequest{})
				})},
			{Name: "resync", Usage: "compare the desired routes with the kernel's now and repair the difference (Resync)",
				Description: "--dry-run prints what a resync would add, move, remove and adopt, and changes nothing.\n" +
					"A resync removes at most --resync-max-removals routes nobody asked to remove; --allow-removals lifts that limit for this one.\n" +
					"Example: quiltctl resync --dry-run",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "dry-run", Usage: "print what a resync would do; change nothing"},
					&cli.BoolFlag{Name: "allow-removals", Usage: "remove routes nobody asked to remove even past the limit"},
				},
				Action: admin(0, func(ctx context.Context, c quiltpb.QuiltAdminClient, cc *cli.Context) (proto.Message, error) {
					return c.Resync(ctx, &quiltpb.ResyncRequest{DryRun: cc.Bool("dry-run"), AllowRemovals: cc.Bool("allow-removals")})
				})},
			{Name: "status", Usage: "the node's state in one view (GetStatus)",
				Action: admin(0, func(ctx context.Context, c quiltpb.QuiltAdminClient, cc *cli.Context) (proto.Message, error) {
					return c.GetStatus(ctx, &quiltpb.GetStatusRequest{})
				})},
			{Name: "health", Usage: "ask the gRPC health service: SERVING while the route helper answers; exit 1 otherwise",
				Action: func(cc *cli.Context) error {
					return withConn(cc, 0, 0, func(ctx context.Context, conn *grpc.ClientConn) error {
						resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "quilt.QuiltRuntime"})
						if err != nil {
							return rpcError(err)
						}
						if err := show(cc, resp); err != nil {
							return err
						}
						if resp.Status != healthpb.HealthCheckResponse_SERVING {
							return cli.Exit("", 1)
						}
						return nil
					})
				}},
			{Name: "completion", ArgsUsage: "bash|zsh", Usage: "print a shell completion script",
				Description: "Example: source <(quiltctl completion bash)",
				Action: func(cc *cli.Context) error {
					script, ok := completion[cc.Args().First()]
					if cc.NArg() != 1 || !ok {
						return errors.New("completion takes one argument: bash or zsh")
					}
					_, err := fmt.Fprint(cc.App.Writer, script)
					return err
				}},
		},
	}
}

// interfaceFlag names the container's interface an allocation is for;
// none means the container as a whole.
var interfaceFlag = &cli.StringFlag{Name: "interface", Aliases: []string{"i"}, Usage: "the container's interface (as CNI's CNI_IFNAME); empty: the container as a whole"}

var batchFlags = []cli.Flag{
	&cli.StringFlag{Name: "via", Value: "vxlan100", Usage: "interface of the routes added that name none after their destination"},
	&cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "read the changes from this file, one per line (- for standard input)"},
}

// via returns the interface of a route added: the one given after its
// destination (arg), else --via (default vxlan100). Both given and
// different is a usage error.
func via(cc *cli.Context, arg string) (string, error) {
	switch {
	case arg == "":
		return cc.String("via"), nil
	case cc.IsSet("via") && cc.String("via") != arg:
		return "", fmt.Errorf("two interfaces for one route: --via %s and %s; give one", cc.String("via"), arg)
	}
	return arg, nil
}

// readChanges takes the changes from the arguments or --file: for an
// apply, +DESTINATION adds and -DESTINATION removes; for a sync, each is a
// destination to route. A word without a slash, which no destination
// lacks and no interface name has, is the interface of the add before it.
func readChanges(cc *cli.Context, apply bool) ([]*quiltpb.RouteChange, error) {
	words := cc.Args().Slice()
	if f := cc.String("file"); f != "" {
		var b []byte
		var err error
		if f == "-" {
			b, err = io.ReadAll(cc.App.Reader)
		} else {
			b, err = os.ReadFile(f)
		}
		if err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
		words = append(words, strings.Fields(string(b))...)
	}
	out := make([]*quiltpb.RouteChange, 0, len(words))
	named := false // the last change was given its interface
	for _, w := range words {
		if !strings.Contains(w, "/") {
			if err := ifaceWord(cc, out, named, w, apply); err != nil {
				return nil, err
			}
			named = true
			continue
		}
		named = false
		c := &quiltpb.RouteChange{Destination: w, ViaInterface: cc.String("via")}
		if apply {
			switch {
			case strings.HasPrefix(w, "+"):
				c.Destination = w[1:]
			case strings.HasPrefix(w, "-"):
				c.Destination, c.ViaInterface = w[1:], ""
			default:
				return nil, fmt.Errorf("change %q: want +DESTINATION [INTERFACE] to add or -DESTINATION to remove", w)
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// ifaceWord sets w as the interface of the last change, an add that was
// not given one yet.
func ifaceWord(cc *cli.Context, out []*quiltpb.RouteChange, named bool, w string, apply bool) error {
	if _, err := netip.ParseAddr(w); err == nil {
		return fmt.Errorf("%q is an address; a destination needs its prefix length, as in 10.42.2.0/24", w)
	}
	if len(out) == 0 || named || out[len(out)-1].ViaInterface == "" {
		want := "DESTINATION INTERFACE"
		if apply {
			want = "+DESTINATION INTERFACE (a removal takes none)"
		}
		return fmt.Errorf("interface %q follows no route to add; give it after its destination: %s", w, want)
	}
	ifname, err := via(cc, w)
	out[len(out)-1].ViaInterface = ifname
	return err
}

// batch runs a batch RPC and reports it: a summary and each failure, or
// the JSON answer; exit 1 if any route failed.
func batch(cc *cli.Context, rpc func(context.Context, quiltpb.QuiltAdminClient) (*quiltpb.ApplyRoutesResponse, error)) error {
	return withConn(cc, cc.NArg(), cc.NArg(), func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := rpc(ctx, quiltpb.NewQuiltAdminClient(conn))
		if err != nil {
			return rpcError(err)
		}
		if cc.String("output") == "json" {
			if err := show(cc, resp); err != nil {
				return err
			}
		} else {
			count := map[quiltpb.RouteResult]int{}
			for _, r := range resp.Results {
				count[r.Result]++
				if r.Result == quiltpb.RouteResult_ROUTE_RESULT_FAILED {
					fmt.Fprintf(cc.App.Writer, "failed  %s: %s\n", r.Destination, r.Error)
				}
			}
			fmt.Fprintf(cc.App.Writer, "%d routes: %d created, %d unchanged, %d moved, %d deleted, %d failed\n", len(resp.Results),
				count[quiltpb.RouteResult_ROUTE_RESULT_CREATED], count[quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED],
				count[quiltpb.RouteResult_ROUTE_RESULT_MOVED], count[quiltpb.RouteResult_ROUTE_RESULT_DELETED], resp.Failed)
		}
		if resp.Failed > 0 {
			return cli.Exit(fmt.Sprintf("%d of %d route changes failed", resp.Failed, len(resp.Results)), 1)
		}
		return nil
	})
}

// answer is what every QuiltRuntime reply has.
type answer interface {
	proto.Message
	GetSuccess() bool
	GetError() string
}

// agent wraps one of the agent's RPCs: one argument to most, the answer
// printed, exit 1 when success is false.
func agent(most int, rpc func(context.Context, quiltpb.QuiltRuntimeClient, *cli.Context) (answer, error)) cli.ActionFunc {
	return func(cc *cli.Context) error {
		return withConn(cc, 1, most, func(ctx context.Context, conn *grpc.ClientConn) error {
			a, err := rpc(ctx, quiltpb.NewQuiltRuntimeClient(conn), cc)
			if err != nil {
				return rpcError(err)
			}
			if cc.String("output") == "json" {
				if err := show(cc, a); err != nil {
					return err
				}
			} else if a.GetSuccess() {
				fmt.Fprintln(cc.App.Writer, "ok")
			}
			if !a.GetSuccess() {
				return cli.Exit(a.GetError(), 1)
			}
			return nil
		})
	}
}

// admin wraps one QuiltAdmin RPC taking nargs arguments.
func admin(nargs int, rpc func(context.Context, quiltpb.QuiltAdminClient, *cli.Context) (proto.Message, error)) cli.ActionFunc {
	return func(cc *cli.Context) error {
		return withConn(cc, nargs, nargs, func(ctx context.Context, conn *grpc.ClientConn) error {
			m, err := rpc(ctx, quiltpb.NewQuiltAdminClient(conn), cc)
			if err != nil {
				return rpcError(err)
			}
			return show(cc, m)
		})
	}
}

// rpcError reports a gRPC error as its code and message, exit 1.
func rpcError(err error) error {
	st := status.Convert(err)
	return cli.Exit(fmt.Sprintf("%s: %s", st.Code(), st.Message()), 1)
}

// withConn checks the argument count (least to most), dials, and runs f
// with the deadline.
func withConn(cc *cli.Context, least, most int, f func(context.Context, *grpc.ClientConn) error) error {
	if n := cc.NArg(); n < least || n > most {
		want := "no arguments"
		switch {
		case least == 1 && most == 2:
			want = "one or two arguments, " + cc.Command.ArgsUsage
		case most > 0:
			want = "exactly one argument, " + cc.Command.ArgsUsage
		}
		return fmt.Errorf("%s takes %s (flags go before them); got %q", cc.Command.Name, want, cc.Args().Slice())
	}
	conn, err := dial(cc)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(cc.Context, cc.Duration("timeout"))
	defer cancel()
	return f(ctx, conn)
}

// show writes a reply as JSON, or as text made for people.
func show(cc *cli.Context, m proto.Message) error {
	w := cc.App.Writer
	if cc.String("output") == "json" {
		b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	}
	switch m := m.(type) {
	case *quiltpb.AllocateIPResponse:
		fmt.Fprintf(w, "%s/%d gateway %s\n", m.Ip, m.PrefixLength, m.Gateway)
	case *quiltpb.ReleaseIPResponse:
		if m.Released {
			fmt.Fprintf(w, "released %s\n", m.Ip)
		} else {
			fmt.Fprintln(w, "no address was allocated; nothing changed")
		}
	case *quiltpb.ListAllocationsResponse:
		if m.Subnet == "" {
			fmt.Fprintln(w, "no subnet configured yet")
			return nil
		}
		fmt.Fprintf(w, "subnet %s, gateway %s, range %s-%s, %d allocated\n", m.Subnet, m.Gateway, m.RangeFirst, m.RangeLast, len(m.Allocations))
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "IP\tCONTAINER\tINTERFACE\tNETWORK")
		for _, a := range m.Allocations {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Ip, a.ContainerId, dash(a.InterfaceName), dash(a.Network))
		}
		return tw.Flush()
	case *quiltpb.ListRoutesResponse:
		if !m.HelperAvailable {
			fmt.Fprintf(w, "route helper unavailable (%s): installed routes unknown\n", m.HelperError)
		}
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "DESTINATION\tDESIRED\tINSTALLED\tSTATE\tDETAIL")
		for _, r := range m.Routes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Destination, dash(r.DesiredInterface), dash(r.InstalledInterface), stateName(r.State), r.Detail)
		}
		return tw.Flush()
	case *quiltpb.GetStatusResponse:
		printStatus(w, m)
	case *quiltpb.ResyncResponse:
		printResync(w, m)
	case *healthpb.HealthCheckResponse:
		fmt.Fprintln(w, m.Status)
	default:
		fmt.Fprintln(w, m)
	}
	return nil
}

func printStatus(w io.Writer, m *quiltpb.GetStatusResponse) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	subnet := "not configured yet"
	if m.Subnet != "" {
		subnet = fmt.Sprintf("%s (gateway %s)", m.Subnet, m.Gateway)
	}
	helper := "available"
	if !m.HelperAvailable {
		helper = "UNAVAILABLE: " + m.HelperError
	}
	routes := fmt.Sprintf("%d desired, %d installed now, %d of them in sync", m.DesiredRoutes, m.InstalledRoutesNow, m.InSyncRoutesNow)
	if m.RoutesNowError != "" {
		routes = fmt.Sprintf("%d desired, installed now unknown: %s", m.DesiredRoutes, m.RoutesNowError)
	}
	r := m.LastResync
	resync := "none yet"
	if r.GetTime() != "" {
		outcome := "ok"
		if !r.Ok {
			outcome = "NOT OK"
		}
		resync = fmt.Sprintf("%s at %s, took %v: %d installed; %s", outcome, r.Time,
			time.Duration(r.DurationSeconds*float64(time.Second)).Round(time.Microsecond), m.InstalledRoutes, resyncCounts(r))
		if r.Error != "" {
			resync += "; " + r.Error
		}
	}
	for _, kv := range [][2]string{
		{"version", m.Version},
		{"subnet", subnet},
		{"allocations", fmt.Sprintf("%d of %d", m.Allocations, m.Capacity)},
		{"routes", routes},
		{"route helper", helper},
		{"last resync", resync},
		{"resync interval", time.Duration(m.ResyncIntervalSeconds * float64(time.Second)).String()},
		{"removal limit", fmt.Sprintf("%d routes a resync removes unasked (--resync-max-removals %s)", m.RemovalLimit, m.ResyncMaxRemovals)},
		{"adopted", fmt.Sprintf("%d routes not yet confirmed by the agent (--adopt-grace %v)", m.AdoptedRoutes,
			time.Duration(m.AdoptGraceSeconds*float64(time.Second)))},
		{"state dir", m.StateDir},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func stateName(s quiltpb.RouteState) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.String(), "ROUTE_STATE_")), "_", "-")
}

func dial(cc *cli.Context) (*grpc.ClientConn, error) {
	l, err := frontend.ParseAddr(cc.String("addr"))
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if cc.String("tls-ca") != "" || cc.String("tls-cert") != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cc.String("tls-server-name")}
		if ca := cc.String("tls-ca"); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, fmt.Errorf("--tls-ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("--tls-ca %s: no PEM certificates in it", ca)
			}
		}
		if cc.String("tls-cert") != "" {
			cert, err := tls.LoadX509KeyPair(cc.String("tls-cert"), cc.String("tls-key"))
			if err != nil {
				return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(tc)
	}
	target := "passthrough:///" + l.Addr
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	switch l.Network {
	case "unix":
		target = "unix://" + l.Addr
	case "vsock":
		opts = append(opts, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return vsock.Dial(l.CID, l.Port, nil)
		}))
	}
	return grpc.NewClient(target, opts...)
}

// completion holds the shell scripts; both ask quiltctl itself for the
// candidates (urfave/cli's --generate-bash-completion).
var completion = map[string]string{
	"bash": `# bash completion for quiltctl: source <(quiltctl completion bash)
_quiltctl() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == -* ]]; then
    words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _quiltctl quiltctl
`,
	"zsh": `# zsh completion for quiltctl: source <(quiltctl completion zsh)
autoload -U +X bashcompinit && bashcompinit
_quiltctl() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _quiltctl quiltctl
`,
}

// resyncCounts says what a resync did.
func resyncCounts(r *quiltpb.ResyncStatus) string {
	s := fmt.Sprintf("added %d, moved %d, removed %d, conflicts %d, failed %d", r.Added, r.Moved, r.Removed, r.Conflicts, r.Failed)
	if r.Adopted > 0 || r.Forgotten > 0 || r.Held > 0 {
		s += fmt.Sprintf(", adopted %d, forgotten %d, removals held back %d", r.Adopted, r.Forgotten, r.Held)
	}
	return s
}

// printResync prints what a resync did or would do, a line per route.
func printResync(w io.Writer, m *quiltpb.ResyncResponse) {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ACTION\tDESTINATION\tDESIRED\tINSTALLED\tDETAIL")
	for _, group := range []struct {
		action string
		routes []*quiltpb.RouteStatus
	}{{"adopt", m.Adopt}, {"add", m.Add}, {"move", m.Move}, {"remove", m.Remove}} {
		for _, rs := range group.routes {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", group.action, rs.Destination, rs.DesiredInterface, rs.InstalledInterface, rs.Detail)
		}
	}
	for _, dst := range m.Forget {
		fmt.Fprintf(tw, "forget\t%s\t\t\tadopted, not confirmed by the agent in time\n", dst)
	}
	tw.Flush()
	if m.RemovalsHeld {
		fmt.Fprintf(w, "removals held back: more than the limit of %d; quiltctl resync --allow-removals makes them\n", m.RemovalLimit)
	}
	if m.Result == nil {
		fmt.Fprintln(w, "dry run: nothing changed")
		return
	}
	fmt.Fprintln(w, "done:", resyncCounts(m.Result))
}
