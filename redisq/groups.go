package redisq

import (
	"context"
	"fmt"
	"sort"
)

// AddToGroup adds queues to the members of group name in namespace ns,
// creating it if needed; members it already has stay (set union, as the
// original's SADD on POST /group).
func (s *Store) AddToGroup(ctx context.Context, ns, name string, queues []string) error {
	members := make([]any, len(queues))
	for i, q := range queues {
		members[i] = q
	}
	if err := s.rdb.SAdd(ctx, KeyOfGroup(ns, name), members...).Err(); err != nil {
		return fmt.Errorf("store group %s: %w", name, err)
	}
	return nil
}

// Group returns the members of a group, sorted (empty if unknown).
func (s *Store) Group(ctx context.Context, ns, name string) ([]string, error) {
	m, err := s.rdb.SMembers(ctx, KeyOfGroup(ns, name)).Result()
	if err != nil {
		return nil, fmt.Errorf("group %s: %w", name, err)
	}
	sort.Strings(m)
	return m, nil
}

// ModifyGroup adds and removes members; ErrNotFound if the group does not exist.
func (s *Store) ModifyGroup(ctx context.Context, ns, name string, add, remove []string) error {
	args := make([]any, 0, 1+len(add)+len(remove))
	args = append(args, len(add))
	for _, q := range add {
		args = append(args, q)
	}
	for _, q := range remove {
		args = append(args, q)
	}
	n, err := modifyGroupScript.Run(ctx, s.rdb, []string{KeyOfGroup(ns, name)}, args...).Int()
	if err != nil {
		return fmt.Errorf("modify group %s: %w", name, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteGroup removes a group.
func (s *Store) DeleteGroup(ctx context.Context, ns, name string) error {
	if err := s.rdb.Del(ctx, KeyOfGroup(ns, name)).Err(); err != nil {
		return fmt.Errorf("delete group %s: %w", name, err)
	}
	return nil
}
