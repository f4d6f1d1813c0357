package request

// HintJSONBody is added (as "hint") to a 400 answer of a route that takes
// a JSON body when the request did not say Content-Type: application/json,
// next to the unchanged error strings of the classic API.
const HintJSONBody = "this route expects a JSON body sent with the header Content-Type: application/json"

// IsJSONContentType reports whether a Content-Type header value is
// application/json (case-insensitive, parameters such as a charset allowed).
func IsJSONContentType(ct string) bool { return validContentType(ct) }
