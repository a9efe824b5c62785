// Package fcm sends Herald's Android deliveries through Firebase Cloud Messaging's HTTP v1 API,
// using the firebase.google.com/go/v4 messaging SDK with service-account credentials, and maps
// FCM's answers onto the workers' error classes.
//
// # The message
//
// A delivery becomes one FCM message to the registration token in Message.To: a notification
// with the rendered title and body (left out when both are empty), the rendered data with every
// value a string (strings as they are, anything else JSON-encoded) plus DeliveryIDKey, Android
// priority HIGH for high-priority deliveries and NORMAL otherwise, and a ttl that runs out at the
// delivery's ExpiresAt (at least zero, at most FCM's four weeks; FCM's default when ExpiresAt is
// zero). The name FCM answers, projects/{project}/messages/{id}, is the provider message id.
//
// # Outcomes
//
// Every Send ends in one row of this table, the first that matches (outcomeTable in outcome.go;
// an FCM error code is the errorCode of the answer's FcmError detail):
//
//	row                                          outcome        reason, effect, wait
//	2xx                                          sent           the answered name is the provider message id
//	UNREGISTERED                                 permanent      "unregistered", DeactivateToken
//	INVALID_ARGUMENT about message.token         permanent      "bad_token", DeactivateToken
//	INVALID_ARGUMENT                             permanent      "rejected" (the payload: the token stays)
//	SENDER_ID_MISMATCH                           permanent      "sender_id_mismatch", DeactivateToken
//	QUOTA_EXCEEDED                               transient      Retry-After
//	UNAVAILABLE                                  transient      Retry-After
//	INTERNAL                                     transient      Retry-After
//	THIRD_PARTY_AUTH_ERROR (or APNS_AUTH_ERROR)  misconfigured  the channel pauses; the attempt is not counted
//	401 or 403 otherwise                         misconfigured  Herald's access token, or its permission on the project
//	404 otherwise                                misconfigured  a wrong project id or endpoint
//	408, 429 or 5xx otherwise                    transient      Retry-After
//	other 4xx                                    permanent      "rejected"
//	other status (1xx, 3xx: never followed)      transient
//	token endpoint refuses the credentials       misconfigured  4xx but 408 and 429: a deleted key, a disabled account
//	token endpoint fails otherwise               transient      Retry-After; also a token fetch cut short by the deadline
//	network error, dropped connection, timeout   transient
//
// INVALID_ARGUMENT matches FCM's error code, or Google's status INVALID_ARGUMENT on an answer
// without an FCM code (the front end refusing the JSON). "About message.token" means a 400 with
// a google.rpc.BadRequest field violation on message.token, or, only when FCM names no fields
// at all, FCM's own sentence for a malformed token. The SDK does not expose field violations
// (it keeps only the FcmError code), so they are read from the answer's body.
// A token is only ever deactivated on an FCM error code that says so: a 404 or 403 without one
// means Herald is misconfigured, and deactivating on it would wipe out every token the channel
// sends to.
//
// Deliveries that cannot become an FCM message fail before any request: another channel
// (wrong_channel), no token (bad_token, no effect), a data key FCM reserves ("from",
// "message_type", "google…", "gcm…") or a value that cannot be JSON-encoded (rejected).
//
// Errors name the delivery, the HTTP status, Google's status, FCM's error code, the fields FCM
// objected to and FCM's message with the token and the content redacted; never the token or the
// payload.
//
// # One request per Send
//
// The SDK retries network errors (failed token fetches among them) and 503 answers itself: up
// to four more requests over about seven seconds, each wait stretched to what Retry-After asks
// if that is at most two minutes. It has no option to turn this off.
// Sender cuts that loop: its transport reads the whole answer (or the network error), records
// it, and cancels the request's context, so the SDK's first wait ends at once and no second
// request goes out. Send then classifies what the transport recorded. Herald's worker retries
// with its own backoff and jitter, honours Retry-After, counts attempts and opens its circuit
// breaker on what it sees; retries hidden inside one attempt would make a Send outlast its
// deadline, spend FCM quota unseen, and, after a connection lost once FCM had the message,
// deliver a notification twice.
//
// Access tokens come from the service account's key through its token_uri, cached until shortly
// before they expire, fetched at most once at a time, and dropped when FCM answers 401 without
// an FCM error code. A fetch that outlasts a Send's deadline goes on in the background for the
// next Send, bounded by Config.Timeout. Sender never uses Application Default Credentials and so
// never probes the cloud metadata server.
package fcm
