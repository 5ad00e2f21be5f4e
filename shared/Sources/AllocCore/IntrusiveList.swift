// One intrusive doubly linked list for every allocator: the links live inside the nodes
// (slab headers, span headers, areas), the list's ends in a header the allocator owns, and
// nothing is allocated to link or unlink.

/// A doubly linked list threaded through raw memory.
///
/// Each node holds two pointer words at `linkOffset`: the previous node, then the next.
/// The list's *anchor* is one word (the first node) or two (the first and the last, for a
/// list with a tail), wherever the allocator keeps it. The handle is two words and a flag,
/// trivially copyable; the anchor and the nodes must stay mapped while it is used, and the
/// caller serialises every change to one list (a lock, or a list only one thread touches).
///
/// ```swift
/// // A slab header holds its links at offset 72; the bin holds the anchor.
/// let partial = IntrusiveList(anchor: bin + 16, linkOffset: 72, hasTail: false)
/// partial.pushFront(slab)
/// while let slab = partial.popFront() { ... }
/// ```
///
/// Invariant (checked by ``integrityViolation(limit:)``, and at each change in debug
/// builds): the first node's previous link is nil, each node's next node links back to
/// it, the last node's next link is nil and, with a tail, the anchor's last word names
/// it. A node that is in no list has both links nil: ``remove(_:)`` clears them, and
/// ``pushFront(_:)``/``pushBack(_:)`` assert it, so a node pushed twice into a list of
/// more than one node traps in debug builds, naming it. The only node of a list has nil
/// links too: an allocator whose lists share a node's links also checks, by the node's
/// own state, that the node left its old list. Nodes start unlinked in zeroed memory.
public struct IntrusiveList: @unchecked Sendable {
    /// The first node's word; with a tail, the last node's word follows it.
    public let anchor: UnsafeMutableRawPointer
    /// Where a node's previous link lies; its next link is the word after.
    public let linkOffset: Int
    /// Whether the anchor keeps the last node too (needed by ``pushBack(_:)`` and ``last``).
    public let hasTail: Bool

    /// A handle on the list anchored at `anchor` (one word, two with a tail).
    @inlinable
    public init(anchor: UnsafeMutableRawPointer, linkOffset: Int, hasTail: Bool = false) {
        assert(Int(bitPattern: anchor) & 7 == 0, "IntrusiveList: anchor \(anchor) is not 8-byte aligned")
        assert(linkOffset >= 0 && linkOffset & 7 == 0, "IntrusiveList: link offset \(linkOffset) is not a word offset")
        self.anchor = anchor
        self.linkOffset = linkOffset
        self.hasTail = hasTail
    }

    /// Empties the anchor (for memory that is not zeroed). The nodes keep their links.
    @inlinable
    public func initializeEmpty() {
        anchor.storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
        if hasTail { anchor.storeBytes(of: nil, toByteOffset: 8, as: UnsafeMutableRawPointer?.self) }
    }

    // MARK: Reading

    /// The first node, or nil when the list is empty.
    @inlinable
    public var first: UnsafeMutableRawPointer? { anchor.load(as: UnsafeMutableRawPointer?.self) }

    /// The last node, or nil when the list is empty.
    ///
    /// - Precondition: the list has a tail.
    @inlinable
    public var last: UnsafeMutableRawPointer? {
        precondition(hasTail, "IntrusiveList.last of a list without a tail")
        return anchor.load(fromByteOffset: 8, as: UnsafeMutableRawPointer?.self)
    }

    @inlinable
    public var isEmpty: Bool { first == nil }

    /// The node after `node`, or nil for the last.
    @inlinable
    public func next(after node: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        node.load(fromByteOffset: linkOffset &+ 8, as: UnsafeMutableRawPointer?.self)
    }

    /// The node before `node`, or nil for the first.
    @inlinable
    public func previous(before node: UnsafeMutableRawPointer) -> UnsafeMutableRawPointer? {
        node.load(fromByteOffset: linkOffset, as: UnsafeMutableRawPointer?.self)
    }

    /// Whether `node` is linked to nothing (in no list, or the only node of one).
    @inlinable
    public func isUnlinked(_ node: UnsafeMutableRawPointer) -> Bool {
        previous(before: node) == nil && next(after: node) == nil
    }

    // MARK: Changing

    /// Makes `node` the first node. O(1).
    ///
    /// - Precondition (debug): `node` is in no list.
    @inlinable
    public func pushFront(_ node: UnsafeMutableRawPointer) {
        assert(isUnlinked(node) && first != node, "IntrusiveList.pushFront of \(node), which is in a list")
        let oldFirst = first
        setNext(of: node, to: oldFirst)
        if let oldFirst { setPrevious(of: oldFirst, to: node) } else if hasTail { setLast(node) }
        setFirst(node)
    }

    /// Makes `node` the last node. O(1).
    ///
    /// - Precondition: the list has a tail; (debug) `node` is in no list.
    @inlinable
    public func pushBack(_ node: UnsafeMutableRawPointer) {
        precondition(hasTail, "IntrusiveList.pushBack on a list without a tail")
        assert(isUnlinked(node) && first != node, "IntrusiveList.pushBack of \(node), which is in a list")
        let oldLast = last
        setPrevious(of: node, to: oldLast)
        if let oldLast { setNext(of: oldLast, to: node) } else { setFirst(node) }
        setLast(node)
    }

    /// Unlinks `node` and clears its links. O(1).
    ///
    /// - Precondition (debug): `node` is linked where it claims to be: its previous node
    ///   names it (for the first node, this list's anchor does), and so does its next node
    ///   (for the last node of a list with a tail, the tail). A node of another list
    ///   traps when it is that list's first or last; in the middle of one, only the
    ///   integrity walker can tell.
    @inlinable
    public func remove(_ node: UnsafeMutableRawPointer) {
        let before = previous(before: node)
        let after = next(after: node)
        assert(
            (before.map { next(after: $0) } ?? first) == node
                && (after.map { previous(before: $0) } ?? (hasTail ? last : node)) == node,
            "IntrusiveList.remove of \(node), which is not in this list")
        if let before { setNext(of: before, to: after) } else { setFirst(after) }
        if let after { setPrevious(of: after, to: before) } else if hasTail { setLast(before) }
        setPrevious(of: node, to: nil)
        setNext(of: node, to: nil)
    }

    /// Removes and returns the first node, or nil when the list is empty. O(1).
    @inlinable
    public func popFront() -> UnsafeMutableRawPointer? {
        guard let node = first else { return nil }
        remove(node)
        return node
    }

    // MARK: Walking and checking

    /// Calls `body` with each node, first to last. `body` may remove the node it is given
    /// (the next one is read before the call), but nothing else.
    @inlinable
    public func forEach(_ body: (UnsafeMutableRawPointer) throws -> Void) rethrows {
        var node = first
        while let current = node {
            node = next(after: current)
            try body(current)
        }
    }

    /// Whether `node` is in the list. O(n): for checks, not for paths that run often.
    public func contains(_ node: UnsafeMutableRawPointer) -> Bool {
        var current = first
        while let candidate = current {
            if candidate == node { return true }
            current = next(after: candidate)
        }
        return false
    }

    /// The number of nodes. O(n).
    public var count: Int {
        var total = 0
        forEach { _ in total += 1 }
        return total
    }

    /// What is wrong with the list's links, or nil when they are sound: a first node with
    /// a previous link, a node whose next does not link back, a tail that is not the last
    /// node, or more than `limit` nodes (a cycle, or a list longer than the caller knows
    /// it can be). O(n). Allocators run it from their integrity walkers.
    public func integrityViolation(limit: Int = Int.max) -> String? {
        guard let head = first else {
            if hasTail, let tail = last { return "an empty list whose tail is \(tail)" }
            return nil
        }
        if let stray = previous(before: head) { return "the first node \(head) links back to \(stray)" }
        var node = head
        var seen = 1
        while let after = next(after: node) {
            if previous(before: after) != node {
                return "\(after), after \(node), links back to \(String(describing: previous(before: after)))"
            }
            seen += 1
            if seen > limit { return "more than \(limit) nodes (a cycle?)" }
            node = after
        }
        if hasTail, last != node { return "the tail is \(String(describing: last)), the last node \(node)" }
        return nil
    }

    // MARK: Internals

    @inlinable
    func setFirst(_ node: UnsafeMutableRawPointer?) { anchor.storeBytes(of: node, as: UnsafeMutableRawPointer?.self) }

    @inlinable
    func setLast(_ node: UnsafeMutableRawPointer?) {
        anchor.storeBytes(of: node, toByteOffset: 8, as: UnsafeMutableRawPointer?.self)
    }

    @inlinable
    func setPrevious(of node: UnsafeMutableRawPointer, to previous: UnsafeMutableRawPointer?) {
        node.storeBytes(of: previous, toByteOffset: linkOffset, as: UnsafeMutableRawPointer?.self)
    }

    @inlinable
    func setNext(of node: UnsafeMutableRawPointer, to next: UnsafeMutableRawPointer?) {
        node.storeBytes(of: next, toByteOffset: linkOffset &+ 8, as: UnsafeMutableRawPointer?.self)
    }
}
