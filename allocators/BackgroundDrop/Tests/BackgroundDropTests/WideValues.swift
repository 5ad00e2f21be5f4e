// Values too wide for a slot's 48-byte payload, which a drop moves into a box first
// (spec section 2): a copyable struct and a non-copyable one, each reporting its deinit
// through the tracked value inside.

import AllocTestSupport

/// A struct larger than a slot's payload: it is boxed.
struct Wide {
    let tracked: TrackedObject
    var padding: (Int, Int, Int, Int, Int, Int, Int) = (1, 2, 3, 4, 5, 6, 7)
}

/// A `~Copyable` struct larger than a slot's payload.
struct WideToken: ~Copyable {
    let token: TrackedToken
    var padding: (Int, Int, Int, Int, Int, Int) = (1, 2, 3, 4, 5, 6)
}
