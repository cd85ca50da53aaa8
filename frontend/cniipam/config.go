package cniipam

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/quiltmesh/quilt-runtime/frontend/internal/quote"
	"github.com/quiltmesh/quilt-runtime/frontend/ipam"
)

// Defaults of the "ipam" object's keys.
const (
	DefaultSocket  = "/run/quilt-runtime/runtime.sock"
	DefaultTimeout = 2 * time.Second
	DefaultGCGrace = time.Minute
)

// valueBound is the most bytes of a configuration value an error shows.
const valueBound = 64

// Field is one key of the plugin's "ipam" object.
type Field struct {
	Name, Default, Usage string
}

// Fields are every key the "ipam" object may hold; any other is refused
// (code 2). The man page and the README list them from here.
var Fields = []Field{
	{"type", "(required)", `"quilt-ipam": the runtime finds the plugin by this name in its CNI_PATH`},
	{"socket", DefaultSocket, "quilt-runtime's Unix socket (its --grpc-addr unix://PATH), an absolute path"},
	{"timeout", DefaultTimeout.String(), "deadline of each call to quilt-runtime, a Go duration; past it the command fails with code 11"},
	{"gcGracePeriod", DefaultGCGrace.String(), "GC keeps allocations younger than this, whatever the runtime's list says (an ADD may not be in it yet)"},
}

// Config is the plugin's part of the network configuration.
type Config struct {
	Socket  string
	Timeout time.Duration
	GCGrace time.Duration
}

// netConf is the network configuration the runtime passes on stdin: the
// common keys, with ours in "ipam".
type netConf struct {
	types.PluginConf
	IPAM json.RawMessage `json:"ipam"`
}

// parseConf reads the network configuration. Its errors are *types.Error
// with the specification's codes.
func parseConf(stdin []byte) (*types.PluginConf, Config, error) {
	var nc netConf
	if err := json.Unmarshal(stdin, &nc); err != nil {
		return nil, Config{}, types.NewError(types.ErrDecodingFailure, "network configuration is not valid JSON", err.Error())
	}
	if err := ipam.CheckNetwork(nc.Name); err != nil {
		return nil, Config{}, types.NewError(types.ErrInvalidNetworkConfig, "network configuration: "+err.Error(), "")
	}
	cfg, err := parseIPAM(nc.IPAM)
	if err != nil {
		return nil, Config{}, err
	}
	if err := version.ParsePrevResult(&nc.PluginConf); err != nil {
		return nil, Config{}, types.NewError(types.ErrDecodingFailure, "prevResult", err.Error())
	}
	return &nc.PluginConf, cfg, nil
}

// parseIPAM reads the "ipam" object strictly: known keys only, each of
// its type.
func parseIPAM(raw json.RawMessage) (Config, error) {
	cfg := Config{Socket: DefaultSocket, Timeout: DefaultTimeout, GCGrace: DefaultGCGrace}
	var keys map[string]json.RawMessage
	if len(bytes.TrimSpace(raw)) == 0 {
		return cfg, types.NewError(types.ErrInvalidNetworkConfig, `network configuration has no "ipam" object`, "")
	}
	if err := json.Unmarshal(raw, &keys); err != nil {
		return cfg, types.NewError(types.ErrDecodingFailure, `"ipam" is not a JSON object`, err.Error())
	}
	for name, v := range keys {
		var err error
		switch name {
		case "type":
			var s string
			err = json.Unmarshal(v, &s)
		case "socket":
			err = json.Unmarshal(v, &cfg.Socket)
			if err == nil && !filepath.IsAbs(cfg.Socket) {
				err = fmt.Errorf("%q is not an absolute path", cfg.Socket)
			}
		case "timeout":
			err = duration(v, &cfg.Timeout)
		case "gcGracePeriod":
			err = duration(v, &cfg.GCGrace)
		default:
			known := make([]string, len(Fields))
			for i, f := range Fields {
				known[i] = f.Name
			}
			slices.Sort(known)
			return cfg, types.NewError(types.ErrUnsupportedField, fmt.Sprintf("unsupported field in ipam: %q = %s", name, quote.Bound(string(v), valueBound)),
				fmt.Sprintf("quilt-ipam knows %q", known))
		}
		if err != nil {
			return cfg, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("ipam %q = %s: %v", name, quote.Bound(string(v), valueBound), err), "")
		}
	}
	if cfg.Timeout <= 0 {
		return cfg, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("ipam \"timeout\" %v: want a positive duration", cfg.Timeout), "")
	}
	return cfg, nil
}

// duration reads a Go duration written as a JSON string, zero or more.
func duration(v json.RawMessage, d *time.Duration) error {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return fmt.Errorf("want a duration such as \"2s\": %w", err)
	}
	x, err := time.ParseDuration(s)
	if err == nil && x < 0 {
		err = fmt.Errorf("%v is negative", x)
	}
	*d = x
	return err
}
