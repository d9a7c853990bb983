package localapi

import (
	"encoding/json"
	"net/http"
	"strings"
)

// errorBody is the body of every non-2xx reply.
type errorBody struct {
	Error string `json:"error"`
}

// WriteJSON writes v as the JSON body of a reply with the given status.
// Encoding errors after the header is sent mean the caller went away; they
// are not reported.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// WriteError replies {"error":"..."} with the given status. The message is
// flattened to one line because the CLI prints it as its one-line reason.
func WriteError(w http.ResponseWriter, code int, err error) {
	WriteJSON(w, code, errorBody{Error: oneLine(err.Error())})
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
