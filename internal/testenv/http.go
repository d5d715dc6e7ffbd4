package testenv

import (
	"net/http"
	"time"
)

// WaitHTTP waits until url answers 200 (a /readyz).
func WaitHTTP(url string, timeout time.Duration) error {
	return WaitFor(timeout, func() bool {
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, func() string { return url + " does not answer 200" })
}
