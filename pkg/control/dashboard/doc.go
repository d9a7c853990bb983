// Package dashboard is the control plane's web dashboard: one page
// (embedded HTML, JavaScript and CSS, no build step, nothing fetched from
// elsewhere) and the JSON and Server-Sent Events endpoints it reads, on a
// Source that the control plane implements.
package dashboard
