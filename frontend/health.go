package frontend

import (
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// servingStatus sets the health of the agent's service (and the server as
// a whole), which needs the helper. The admin service does not: its
// addresses and views work without it.
func servingStatus(hs *health.Server, up bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if up {
		st = healthpb.HealthCheckResponse_SERVING
	}
	hs.SetServingStatus("", st)
	hs.SetServingStatus(quiltpb.QuiltRuntime_ServiceDesc.ServiceName, st)
}
