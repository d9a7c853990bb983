// Package ratelimit enforces a destination service's rate limit at its
// inbound side: a token bucket per service with a short bounded queue
// (DESIGN §3).
package ratelimit
