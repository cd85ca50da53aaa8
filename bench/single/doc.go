// Package single is the benchmark's baseline for "what an operator would run
// instead" of the privilege-separated pair: the same gRPC services
// (frontend.Run: package api's services on its reconciler, the real state
// file) in one process that calls rtnetlink directly through helper.Routes,
// with no helper hop and no socket between them.
//
// It exists only for quilt-bench (bench/cmd/quilt-bench-single) and is never
// shipped. It needs CAP_NET_ADMIN in the network namespace it runs in, so it
// runs as root; the benchmark starts it in a throwaway namespace, and Serve
// refuses to start unless it finds itself in the namespace Config.Netns
// names.
//
// Knobs: Config, which mirrors quilt-runtime's route policy, state directory,
// IPAM offsets and resync interval, plus the helper's table and route
// protocol. Logs go to the injected *slog.Logger, as the frontend's do.
package single
