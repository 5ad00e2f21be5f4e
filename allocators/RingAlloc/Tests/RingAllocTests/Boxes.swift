// Holders for ~Copyable buffers, which Swift arrays and closures cannot carry by
// themselves: a box for one value, and a bounded queue that threads hand values through.

import AllocCore

/// A class holding one ~Copyable value, so that arrays and closures can carry it.
final class Box<Value: ~Copyable>: @unchecked Sendable {
    var value: Value?

    init(_ value: consuming Value) { self.value = .some(value) }

    /// Calls `body` with the value (which must be there).
    func with<Result: ~Copyable>(_ body: (inout Value) -> Result) -> Result {
        var held = value.take()!
        let result = body(&held)
        value = consume held
        return result
    }

    /// Takes the value out (nil if already taken).
    func take() -> Value? { value.take() }
}

/// A bounded multi-producer multi-consumer queue of ~Copyable values behind a spin lock
/// (AllocCore's, inlined into this module, so the thread sanitizer sees what orders the
/// hand-offs).
final class HandoffQueue<Value: ~Copyable>: @unchecked Sendable {
    private let lock = SpinLock()
    private let slots: UnsafeMutablePointer<Value>
    private var head = 0
    private var storedCount = 0
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
    }

    deinit {
        while storedCount > 0 {
            _ = (slots + head).move()
            head = (head + 1) % capacity
            storedCount -= 1
        }
        slots.deallocate()
    }

    /// Adds `value` at the back; gives it back when the queue is full.
    func push(_ value: consuming Value) -> Value? {
        lock.lock()
        defer { lock.unlock() }
        if storedCount == capacity { return value }
        (slots + (head + storedCount) % capacity).initialize(to: value)
        storedCount += 1
        return nil
    }

    /// Takes the value at the front, or nil when empty.
    func pop() -> Value? {
        lock.lock()
        defer { lock.unlock() }
        guard storedCount > 0 else { return nil }
        let value = (slots + head).move()
        head = (head + 1) % capacity
        storedCount -= 1
        return value
    }
}
