package ingest

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkSCIMListPage reads the first page of 10 users out of n: a page
// costs O(startIndex + count) messages, so the time per page stays flat as
// the number of users grows.
func BenchmarkSCIMListPage(b *testing.B) {
	for _, n := range []int{100, 2000} {
		b.Run(fmt.Sprintf("users=%d", n), func(b *testing.B) {
			e := newEnv(b)
			for i := range n {
				code, _ := e.do("POST", "/scim/v2/Users", scimHeaders(), strings.NewReader(fmt.Sprintf(`{"userName":"u%d@example.com"}`, i)))
				if code != http.StatusCreated {
					b.Fatalf("create %d: %d", i, code)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				code, body := e.do("GET", "/scim/v2/Users?startIndex=1&count=10", scimHeaders(), nil)
				if code != http.StatusOK || !strings.Contains(string(body), fmt.Sprintf(`"totalResults":%d`, n)) {
					b.Fatalf("page: %d %s", code, body)
				}
			}
		})
	}
}
