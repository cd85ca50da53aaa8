// Package testutil is what the project's tests, its demo (e2e/overlay)
// and its benchmark (bench) share to run processes and to check what they
// leave behind:
//
//   - Proc, a started process reaped as soon as it ends, with what it
//     wrote (LogBuffer); StartTest ties one to a test, which kills it at
//     the end and shows its output if the test failed;
//   - Until, a wait on a condition that gives up as soon as the process
//     it depends on has died;
//   - CheckGoroutines, a goroutine-leak check that prints the stacks of
//     the goroutines that leaked, and Proc.Stacks, the same dump from a Go
//     program in another process;
//   - Netns, a named network namespace removed with everything in it
//     when the test ends (netns.Remove), and RequireRoot, which skips a
//     test that needs root, or fails it with CI=true;
//   - Run, a command that must succeed, and FreeLoopback, an address for
//     a server the test starts.
//
// It needs no privileges of its own; Netns needs root. It is never linked
// into the shipped binaries: TestNotShipped checks that of every program
// `make build` builds.
package testutil
