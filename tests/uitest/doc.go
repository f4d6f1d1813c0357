// Package uitest holds the browser tests of the dashboard (/ui/): headless
// Chromium, driven with chromedp, against real gateway and redis-server
// processes. It has no code of its own; see dashboard_test.go.
package uitest
