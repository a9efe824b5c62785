// Package e2e tests Herald end to end: the real services, started in-process or as their own OS
// processes, against a private PostgreSQL, an in-process JetStream server and protocol-faithful
// provider fakes on loopback.
package e2e
