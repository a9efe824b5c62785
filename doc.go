// Package herald is a Go client for Herald's gRPC API: it sends notifications and reports what
// became of them.
//
// NewClient connects to the notifier with an app key (hk_...), the one `heraldctl apps create`
// prints or `make run` writes to .herald/dev.env as HERALD_API_KEY:
//
//	c, err := herald.NewClient("127.0.0.1:7400", os.Getenv("HERALD_API_KEY"))
//	...
//	defer c.Close()
//	res, err := c.Send(ctx, &heraldv1.SendRequest{...})
//	n, err := c.WaitForNotification(ctx, res.NotificationId)
//
// Requests and answers are the generated messages of
// github.com/heraldhq/herald/proto/gen/herald/v1; Notifications, Templates and Contacts give
// the full services for the calls without a method here.
//
// Every call, through the methods or the services, is made safe to repeat and retried:
//   - A Send or SendBatch recipient without an idempotency key gets a random one, the same on
//     every attempt, so a retry after a lost answer returns the first result instead of sending
//     twice. The caller's request is not modified.
//   - RESOURCE_EXHAUSTED with a google.rpc.RetryInfo detail (an app over its request rate) is
//     retried after exactly the delay the server asks for; UNAVAILABLE after an exponential
//     backoff with jitter, except for TemplateService.CreateTemplate, which makes a new version
//     on every call.
//   - No attempt is made that would start after the call's deadline: the last error is
//     returned at once. A call whose context has no deadline gets one (WithTimeout).
//
// Errors from the server are gRPC status errors: status.FromError gives the code and message,
// and an INVALID_ARGUMENT carries a google.rpc.BadRequest detail
// (google.golang.org/genproto/googleapis/rpc/errdetails) naming each bad field.
package herald
