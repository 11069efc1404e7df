// Package shard shares keyed work (ManagedClusters, NodeOperations)
// between operator replicas, with one owner per key at a time.
//
// Membership: every replica holds a Lease of its own in the operator's
// namespace, named after its identity and labelled MemberLabel, and renews
// it every RetryPeriod. Another replica counts as a live member while the
// Lease keeps changing: a Lease whose resourceVersion has not moved for its
// leaseDurationSeconds, as measured on the observer's own monotonic clock
// since it last saw it move, has expired. Wall clocks are never compared
// between replicas; only the rates of their clocks must roughly agree,
// exactly as for client-go's leader election.
//
// Placement: a key's owner is the live member with the highest rendezvous
// (highest random weight) score for it, Owner. Every replica computes the
// same owner from the same members, and a replica joining or leaving moves
// only the keys it wins or held, about 1/n of them.
//
// The fence: wanting a key is not enough to start work on it. Each Lease
// carries, in the HeldAnnotation, the keys its replica holds or is
// claiming. A replica claims a key that no other live Lease holds by
// writing the key into its own Lease (the renewal it makes anyway), then
// lists the Leases again from the hub (a quorum read, after its write) and
// starts the key only if no other live Lease holds it. Of two replicas
// claiming at once, at least one sees the other's claim, so they never both
// start. A replica that stops wanting a key first stops all work on it
// (Keyspace.Release returns only when it has), and only then writes its
// Lease without the key. A replica that cannot renew its Lease within
// RenewDeadline of its last successful renewal stops all of its keys, and
// since RenewDeadline < LeaseDuration it has done so before any other
// replica may consider its Lease expired and claim them.
//
// Hub cost: one Lease write per replica per RetryPeriod, whatever the
// number of keys, and one list of the Leases (two when it claims).
package shard
