// Helpers shared by the tests: boxes and queues for ~Copyable buffers (Swift arrays cannot
// hold them), the byte pattern written into buffers, the ring checker, and the check that
// a child process trapped with a message.

import AllocCore
import Glibc
import RingAlloc
import Testing

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

/// A bounded multi-producer multi-consumer queue of ~Copyable values behind a spin lock.
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

/// The byte at `index` of a buffer tagged `tag`: a buffer overwritten by another, or whose
/// bytes were moved wrongly, does not match.
@inline(__always)
func patternByte(tag: Int, index: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: tag &* 31 &+ index &* 7 &+ (index >> 8))
}

/// Fills `bytes` with the pattern of `tag`, starting at pattern index `offset`.
func fillPattern(_ bytes: UnsafeMutableRawBufferPointer, tag: Int, offset: Int = 0) {
    for index in 0..<bytes.count { bytes[index] = patternByte(tag: tag, index: offset + index) }
}

/// The pattern of `tag` over `count` bytes, as an array (to append).
func patternArray(tag: Int, count: Int, offset: Int = 0) -> [UInt8] {
    (0..<count).map { patternByte(tag: tag, index: offset + $0) }
}

/// The index of the first byte that breaks the pattern, or nil.
func firstPatternMismatch(_ bytes: UnsafeRawBufferPointer, tag: Int) -> Int? {
    for index in 0..<bytes.count where bytes[index] != patternByte(tag: tag, index: index) { return index }
    return nil
}

/// Checks that the ring is sound (spec section 4), and records what is wrong.
func expectSound(
    _ ring: borrowing RingAllocator, _ context: @autoclosure () -> String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    if let violation = ring.integrityViolation() {
        Issue.record("\(context()): \(violation)", sourceLocation: sourceLocation)
    }
}

/// Checks that a child process ended by a Swift trap that printed its message (a
/// precondition, not a segmentation fault), and that the message mentions `words`.
func expectTrapMessage(
    _ result: ExitTest.Result?, _ what: String, mentioning words: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    guard let result else { return }  // the exit test itself already recorded the failure
    let text = String(decoding: result.standardErrorContent, as: UTF8.self)
    let trapped = ["Fatal error", "Precondition failed", "Assertion failed"].contains { text.contains($0) }
    #expect(
        trapped, "\(what): expected a trap with a message, got \(result.exitStatus), stderr: \(text.prefix(600))",
        sourceLocation: sourceLocation)
    #expect(
        text.contains(words), "\(what): the message does not mention \"\(words)\": \(text.prefix(600))",
        sourceLocation: sourceLocation)
}

/// Counts deinitialisations, for typed-buffer element tests.
final class DeinitCounter: @unchecked Sendable {
    private let lock = SpinLock()
    private var storedCount = 0
    var count: Int {
        lock.lock()
        defer { lock.unlock() }
        return storedCount
    }
    func increment() {
        lock.lock()
        storedCount += 1
        lock.unlock()
    }
}

/// An element that reports its deinitialisation.
final class Tracked {
    let value: Int
    let counter: DeinitCounter
    init(_ value: Int, _ counter: DeinitCounter) {
        self.value = value
        self.counter = counter
    }
    deinit { counter.increment() }
}

/// Reads the seed from RING_TEST_SEED, or uses `fallback`.
func testSeed(_ fallback: UInt64) -> UInt64 {
    if let text = getenv("RING_TEST_SEED"), let seed = UInt64(String(cString: text)) { return seed }
    return fallback
}

/// The value of a ~Copyable optional (`#require` takes copyable values only).
func unwrap<Value: ~Copyable>(
    _ value: consuming Value?, _ what: @autoclosure () -> String = "a value",
    sourceLocation: SourceLocation = #_sourceLocation
) throws -> Value {
    switch consume value {
    case .some(let unwrapped): return unwrapped
    case .none:
        Issue.record("expected \(what()), got nil", sourceLocation: sourceLocation)
        throw UnwrapFailure()
    }
}

struct UnwrapFailure: Error {}

/// Whether a ~Copyable optional is nil (`#expect(x == nil)` takes copyable values only).
func isNil<Value: ~Copyable>(_ value: borrowing Value?) -> Bool {
    switch value {
    case .none: return true
    case .some: return false
    }
}

/// Passes a Bool through: `#expect(ok(buffer.append(x)))`, since `#expect` cannot take a
/// method call on a ~Copyable value apart.
func ok(_ value: Bool) -> Bool { value }

/// A ~Copyable element that reports its deinitialisation.
struct Resource: ~Copyable {
    var id: Int
    let counter: DeinitCounter
    init(_ id: Int, _ counter: DeinitCounter) {
        self.id = id
        self.counter = counter
    }
    deinit { counter.increment() }
}

/// The id of an optional resource (optional chaining would consume it twice).
func identifier(of resource: consuming Resource?) -> Int? {
    switch consume resource {
    case .some(let resource): return resource.id
    case .none: return nil
    }
}
