package cniipam

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// TestExampleConflist: the example network configuration the package
// installs parses with the reference library, is the one the README
// shows, and quilt-ipam takes its "ipam" object as the defaults.
func TestExampleConflist(t *testing.T) {
	b, err := os.ReadFile("../../packaging/cni/10-quilt.conflist")
	if err != nil {
		t.Fatal(err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "quilt" || list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 {
		t.Fatalf("conflist: %+v", list)
	}
	p := list.Plugins[0]
	var bridge struct {
		Bridge    string `json:"bridge"`
		IsGateway bool   `json:"isGateway"`
		IPMasq    *bool  `json:"ipMasq"`
	}
	err = json.Unmarshal(p.Bytes, &bridge)
	if err != nil || p.Network.Type != "bridge" || p.Network.IPAM.Type != "quilt-ipam" || bridge.Bridge != "quilt0" || !bridge.IsGateway || bridge.IPMasq == nil || *bridge.IPMasq {
		t.Fatalf("plugin: %s %v", p.Bytes, err)
	}
	// What the bridge plugin hands quilt-ipam: its configuration with the
	// network's name and version, as libcni injects them.
	conf, err := libcni.InjectConf(p, map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	_, cfg, err := parseConf(conf.Bytes)
	if err != nil || cfg != (Config{Socket: DefaultSocket, Timeout: DefaultTimeout, GCGrace: DefaultGCGrace}) {
		t.Fatalf("quilt-ipam reads the example as %+v, %v; want the defaults", cfg, err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```json\n"+string(b)+"```") {
		t.Error("README.md does not show packaging/cni/10-quilt.conflist as it is")
	}
	// Every key is in the README's table, with its default.
	for _, f := range Fields {
		row := "| `" + f.Name + "` | " + f.Default + " |"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no row %q", row)
		}
	}
	if DefaultGCGrace != time.Minute || DefaultTimeout != 2*time.Second {
		t.Error("the example's timeout and gcGracePeriod are no longer the defaults: update it and the README")
	}
}
