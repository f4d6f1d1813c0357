package redisq

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// CreateBox creates secure box full with a user and a password hash;
// ErrExists if it exists.
func (s *Store) CreateBox(ctx context.Context, full, user, hash string) error {
	n, err := createBoxScript.Run(ctx, s.rdb, []string{KeysOfQueue(full).Box}, user, hash, s.now().Unix()).Int()
	if err != nil {
		return fmt.Errorf("create box %s: %w", full, err)
	}
	if n == 0 {
		return ErrExists
	}
	return nil
}

// Box returns the user and password hash of secure box full; ErrNotFound if
// there is no such box.
func (s *Store) Box(ctx context.Context, full string) (user, hash string, err error) {
	v, err := s.rdb.HMGet(ctx, KeysOfQueue(full).Box, "user", "hash").Result()
	if err != nil {
		return "", "", fmt.Errorf("box %s: %w", full, err)
	}
	if len(v) < 2 || v[0] == nil || v[1] == nil {
		return "", "", ErrNotFound
	}
	user, _ = v[0].(string)
	hash, _ = v[1].(string)
	return user, hash, nil
}

// BoxesOf returns the user and password hash of each secure box fulls
// (pipelined); an empty hash for a box that does not exist.
func (s *Store) BoxesOf(ctx context.Context, fulls []string) (users, hashes []string, err error) {
	users, hashes = make([]string, len(fulls)), make([]string, len(fulls))
	for start := 0; start < len(fulls); start += pipelineChunk {
		end := min(start+pipelineChunk, len(fulls))
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, end-start)
		for i := start; i < end; i++ {
			cmds[i-start] = pipe.HMGet(ctx, KeysOfQueue(fulls[i]).Box, "user", "hash")
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, nil, fmt.Errorf("boxes: %w", err)
		}
		for i, cmd := range cmds {
			v := cmd.Val()
			if len(v) == 2 && v[0] != nil && v[1] != nil {
				users[start+i], _ = v[0].(string)
				hashes[start+i], _ = v[1].(string)
			}
		}
	}
	return users, hashes, nil
}
