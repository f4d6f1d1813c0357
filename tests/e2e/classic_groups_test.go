package e2e

import "testing"

// classicGroups checks API.md 1.4: groups.
func classicGroups(t *testing.T, n *node) {
	t.Run("Groups", func(t *testing.T) {
		t.Parallel()
		g, a, b, c := qn(t, "g"), qn(t, "a"), qn(t, "b"), qn(t, "c")
		post := func(body any) response { return n.postJSON(t, "/group", body) }
		put := func(name string, body any) response { return n.putJSON(t, "/group/"+name, body) }
		expectJSON(t, post(`{}`), 400, errs("missing name", "missing queues"))
		expectJSON(t, post(map[string]any{"queues": []string{a}}), 400, errs("missing name"))
		expectJSON(t, post(map[string]any{"name": g}), 400, errs("missing queues"))
		expectJSON(t, post(map[string]any{"name": g, "queues": []string{}}), 400, errs("missing queues"))
		expectJSON(t, post(map[string]any{"name": "", "queues": nil}), 400, errs("missing name", "missing queues"))
		expectJSON(t, post(map[string]any{"name": "bad name", "queues": []string{a}}), 400, errs("invalid group name"))
		expectJSON(t, post(map[string]any{"name": g, "queues": []any{1}}), 400, errs("invalid queue element"))

		expectJSON(t, n.get(t, "/group/"+g), 200, map[string]any{"name": g, "queues": []string{}})
		expectJSON(t, post(map[string]any{"name": g, "queues": []string{b, a, a}}), 200, map[string]string{"ok": "group stored"})
		expectJSON(t, n.get(t, "/group/"+g), 200, map[string]any{"name": g, "queues": sorted(a, b)})
		// Storing again adds to the members (set union, the original's
		// SADD); nothing is removed.
		expectJSON(t, post(map[string]any{"name": g, "queues": []string{c, a}}), 200, map[string]string{"ok": "group stored"})
		expectJSON(t, n.get(t, "/group/"+g), 200, map[string]any{"name": g, "queues": sorted(a, b, c)})
		expectJSON(t, put(g, map[string]any{"queuesToRemove": []string{a, b}}), 200, map[string]string{"ok": "group modified"})
		expectJSON(t, n.get(t, "/group/"+g), 200, map[string]any{"name": g, "queues": []string{c}})

		expectJSON(t, put(g, map[string]any{"queuesToAdd": []string{a, b}, "queuesToRemove": []string{c}}), 200, map[string]string{"ok": "group modified"})
		expectJSON(t, n.get(t, "/group/"+g), 200, map[string]any{"name": g, "queues": sorted(a, b)})
		expectJSON(t, put(g, map[string]any{"queuesToRemove": []string{a}}), 200, map[string]string{"ok": "group modified"})
		expectJSON(t, n.get(t, "/group/"+g), 200, map[string]any{"name": g, "queues": []string{b}})
		expectJSON(t, put(g, `{}`), 400, errs("missing queues to add/remove"))
		expectJSON(t, put(g, map[string]any{"queuesToAdd": []string{}, "queuesToRemove": []string{}}), 400, errs("missing queues to add/remove"))
		unknown := qn(t, "unknown")
		expectJSON(t, put(unknown, map[string]any{"queuesToAdd": []string{a}}), 400, errs(unknown+" does not exist"))
		expectJSON(t, n.get(t, "/group/"+unknown), 200, map[string]any{"name": unknown, "queues": []string{}})

		expectJSON(t, n.delete(t, "/group/"+g), 200, map[string]string{"ok": "Group " + g + " removed"})
		expectJSON(t, n.get(t, "/group/"+g), 200, map[string]any{"name": g, "queues": []string{}})
		expectJSON(t, put(g, map[string]any{"queuesToAdd": []string{a}}), 400, errs(g+" does not exist"))

		// Invalid group names in the path.
		expectJSON(t, n.get(t, "/group/bad%20name"), 400, errs("invalid group name"))
		expectJSON(t, n.delete(t, "/group/bad%20name"), 400, errs("invalid group name"))
		expectJSON(t, put("bad%20name", map[string]any{"queuesToAdd": []string{a}}), 400, errs("invalid group name"))
	})
}
