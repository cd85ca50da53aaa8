// Command quiltctl calls a quilt-runtime the way the Quilt Mesh agent does.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/frontend"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// answer is what every QuiltRuntime reply has.
type answer interface {
	GetSuccess() bool
	GetError() string
}

func main() {
	app := &cli.App{
		Name:  "quiltctl",
		Usage: "call quilt-runtime's QuiltRuntime API",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:50051", EnvVars: []string{"QUILT_ADDR"}, Usage: "host:port, unix:///path or vsock://CID:PORT"},
			&cli.StringFlag{Name: "tls-cert", Usage: "client certificate (mTLS)"},
			&cli.StringFlag{Name: "tls-key", Usage: "client key (mTLS)"},
			&cli.StringFlag{Name: "tls-ca", Usage: "verify the server with this CA; enables TLS"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "deadline of the call"},
		},
		Commands: []*cli.Command{
			{Name: "configure-subnet", ArgsUsage: "SUBNET", Usage: "set this node's container subnet", Action: call(func(ctx context.Context, c quiltpb.QuiltRuntimeClient, args []string) (answer, error) {
				return c.ConfigureNodeSubnet(ctx, &quiltpb.ConfigureNodeSubnetRequest{Subnet: args[0]})
			})},
			{Name: "inject-route", ArgsUsage: "DESTINATION", Usage: "route a peer's subnet through the overlay",
				Flags: []cli.Flag{&cli.StringFlag{Name: "via", Value: "vxlan100", Usage: "interface"}},
				Action: func(cc *cli.Context) error {
					return call(func(ctx context.Context, c quiltpb.QuiltRuntimeClient, args []string) (answer, error) {
						return c.InjectRoute(ctx, &quiltpb.InjectRouteRequest{Destination: args[0], ViaInterface: cc.String("via")})
					})(cc)
				}},
			{Name: "remove-route", ArgsUsage: "DESTINATION", Usage: "remove the route to a peer's subnet", Action: call(func(ctx context.Context, c quiltpb.QuiltRuntimeClient, args []string) (answer, error) {
				return c.RemoveRoute(ctx, &quiltpb.RemoveRouteRequest{Destination: args[0]})
			})},
			{Name: "health", Usage: "ask the health service (SERVING while the route helper answers)", Action: func(cc *cli.Context) error {
				conn, err := dial(cc)
				if err != nil {
					return err
				}
				defer conn.Close()
				ctx, cancel := context.WithTimeout(cc.Context, cc.Duration("timeout"))
				defer cancel()
				resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "quilt.QuiltRuntime"})
				if err != nil {
					return err
				}
				fmt.Println(resp.Status)
				if resp.Status != healthpb.HealthCheckResponse_SERVING {
					return cli.Exit("", 1)
				}
				return nil
			}},
		},
	}
	if err := app.Run(os.Args); err != nil {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "quiltctl:", msg)
		}
		var ec cli.ExitCoder
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(2)
	}
}

// call wraps one unary RPC: one argument, print the answer, exit 1 when
// success is false.
func call(rpc func(context.Context, quiltpb.QuiltRuntimeClient, []string) (answer, error)) cli.ActionFunc {
	return func(cc *cli.Context) error {
		if cc.NArg() != 1 {
			return fmt.Errorf("%s takes exactly one argument, %s", cc.Command.Name, cc.Command.ArgsUsage)
		}
		conn, err := dial(cc)
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(cc.Context, cc.Duration("timeout"))
		defer cancel()
		a, err := rpc(ctx, quiltpb.NewQuiltRuntimeClient(conn), cc.Args().Slice())
		if err != nil {
			return err
		}
		if !a.GetSuccess() {
			return cli.Exit("error: "+a.GetError(), 1)
		}
		fmt.Println("ok")
		return nil
	}
}

func dial(cc *cli.Context) (*grpc.ClientConn, error) {
	l, err := frontend.ParseAddr(cc.String("addr"))
	if err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if cc.String("tls-ca") != "" || cc.String("tls-cert") != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if ca := cc.String("tls-ca"); ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = x509.NewCertPool()
			tc.RootCAs.AppendCertsFromPEM(pem)
		}
		if cc.String("tls-cert") != "" {
			cert, err := tls.LoadX509KeyPair(cc.String("tls-cert"), cc.String("tls-key"))
			if err != nil {
				return nil, err
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
