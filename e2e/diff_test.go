package e2e

import (
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/quiltmesh/quilt-runtime/proto/quiltpb"
)

// stateOnly makes cmp.Diff of the admin API's messages judge the node's
// state alone: it leaves out the version, the state directory and the
// settings a status repeats, and when the last resync ran and for how
// long, which vary from run to run.
var stateOnly = cmp.Options{
	protocmp.Transform(),
	protocmp.IgnoreFields(&quiltpb.GetStatusResponse{}, "version", "state_dir", "resync_interval_seconds", "adopt_grace_seconds", "removal_limit", "resync_max_removals"),
	protocmp.IgnoreFields(&quiltpb.ResyncStatus{}, "time", "duration_seconds"),
}
