package api

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/quiltmesh/quilt-runtime/frontend/helperclient"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
	"github.com/quiltmesh/quilt-runtime/frontend/route"
	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
	"github.com/quiltmesh/quilt-runtime/shared/wire"
)

// helperError turns the helper's answer to a change into a message naming
// the route.
func helperError(c route.Route, err error) error {
	op := "add"
	if c.IsRemoval() {
		op = "delete"
	}
	var st wire.Status
	var errno unix.Errno
	switch {
	case errors.Is(err, helperclient.ErrUnavailable) && !c.IsRemoval():
		return fmt.Errorf("%w; route %s is recorded and the next resync adds it", err, c)
	case errors.Is(err, helperclient.ErrUnavailable):
		return fmt.Errorf("%w; the removal of %v is recorded and the next resync deletes the route", err, c.Dst)
	case errors.Is(err, wire.StatusConflict):
		return fmt.Errorf("route %v exists and is not managed by quilt; refusing to replace it; the request is kept and reported as a conflict (%w)", c.Dst, err)
	case errors.Is(err, wire.StatusNotOwned):
		return fmt.Errorf("route %v is not managed by quilt; refusing to delete it (%w)", c.Dst, err)
	case errors.Is(err, wire.StatusNoIface):
		return fmt.Errorf("interface %q does not exist on this node (%w)", c.Ifname, err)
	case errors.As(err, &errno):
		return fmt.Errorf("kernel refused to %s %s: %w", op, c, errno)
	case errors.As(err, &st):
		return fmt.Errorf("route helper refused to %s %s: %w", op, c, err)
	}
	return fmt.Errorf("%s %s: %w", op, c, err)
}

// routeResult names the helper's result in the batch RPCs' terms.
func routeResult(r wire.Result) quiltpb.RouteResult {
	switch r {
	case wire.ResultCreated:
		return quiltpb.RouteResult_ROUTE_RESULT_CREATED
	case wire.ResultUnchanged, wire.ResultAbsent:
		return quiltpb.RouteResult_ROUTE_RESULT_UNCHANGED
	case wire.ResultMoved:
		return quiltpb.RouteResult_ROUTE_RESULT_MOVED
	case wire.ResultDeleted:
		return quiltpb.RouteResult_ROUTE_RESULT_DELETED
	}
	return quiltpb.RouteResult_ROUTE_RESULT_UNSPECIFIED
}

// ipamStatus maps the allocator's errors to status codes.
func ipamStatus(err error) error {
	code := codes.Internal // the state file could not be written
	switch {
	case errors.Is(err, ipam.ErrContainerID), errors.Is(err, ipam.ErrIfname), errors.Is(err, ipam.ErrNetwork):
		code = codes.InvalidArgument
	case errors.Is(err, ipam.ErrNoSubnet):
		code = codes.FailedPrecondition
	case errors.Is(err, ipam.ErrExhausted):
		code = codes.ResourceExhausted
	}
	return status.Error(code, err.Error())
}
