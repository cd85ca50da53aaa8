package frontend

import "fmt"

// privilegeError explains why the given identity is too privileged.
func privilegeError(uid, euid int, capEff uint64) error {
	why := ""
	switch {
	case uid == 0 || euid == 0:
		why = "it is running as uid 0"
	case capEff != 0:
		why = fmt.Sprintf("it holds effective capabilities %#x", capEff)
	default:
		return nil
	}
	return fmt.Errorf("quilt-runtime refuses to start: %s. It never needs privileges; run it as an unprivileged user (the route helper holds CAP_NET_ADMIN), or pass --allow-root", why)
}
