// Package fanout turns one hub watch per kind into many client streams.
//
// A Broker is the store a client-go Reflector writes into (it implements
// cache.ReflectorStore), so the hub is watched exactly once per kind,
// whatever the number of clients. For every change it keeps the object
// encoded once, shared by all clients, records the event in a bounded
// history (for clients that resume with a resourceVersion), and then, its
// lock released, pushes it to the Outbox of every Subscription whose Filter
// matches.
//
// An Outbox is one connection's queue of pending messages. It conflates per
// object: a newer event for an object replaces the pending one (latest state
// wins, a delete is kept) and moves to the back, so pending events stay in
// resourceVersion order and the last resourceVersion a client received is
// always a safe point to resume from. Past its limit an Outbox overflows and
// its connection is closed with a code that tells the client to resume.
package fanout
