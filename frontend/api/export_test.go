package api

import (
	"time"

	"github.com/quiltmesh/quilt-runtime/frontend/route"
)

// For the tests of package api_test.

// HelperError is helperError.
func HelperError(c route.Route, err error) error { return helperError(c, err) }

// Summarize logs the summary of the node's route calls now.
func Summarize(n *Node, now time.Time) { n.summarize(now) }
