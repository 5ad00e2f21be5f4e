// The intrusive list against a model (an array of nodes), with and without a tail; the
// integrity walker on broken links; the debug traps for a node pushed twice or removed
// from a list it is not in (spec section 9).

import AllocCore
import AllocTestSupport
import Testing

@Suite("Intrusive list")
struct IntrusiveListTests {
    /// 64 nodes of 64 bytes, their links at offset 24 (not at the start, as in a header).
    static let nodeCount = 64
    static let linkOffset = 24

    func node(_ page: UnsafeMutableRawPointer, _ index: Int) -> UnsafeMutableRawPointer { page + 64 + index * 64 }

    /// Whether the list holds exactly `model`, in order, both ways.
    func holds(_ list: IntrusiveList, _ model: [UnsafeMutableRawPointer]) -> Bool {
        var forward: [UnsafeMutableRawPointer] = []
        list.forEach { forward.append($0) }
        var backward: [UnsafeMutableRawPointer] = []
        var current = list.hasTail ? list.last : forward.last
        while let node = current {
            backward.append(node)
            current = list.previous(before: node)
        }
        return forward == model && backward == model.reversed() && list.count == model.count
            && list.isEmpty == model.isEmpty && list.integrityViolation() == nil
    }

    @Test("random pushes, removals and pops match a model", arguments: [false, true])
    func randomOperations(hasTail: Bool) throws {
        try forEachTestSeed("randomOperations(hasTail: \(hasTail))") { seed in
            let page = rawPages(2)
            defer { page.deallocate() }
            let list = IntrusiveList(anchor: page, linkOffset: Self.linkOffset, hasTail: hasTail)
            var model: [UnsafeMutableRawPointer] = []
            var random = SplitMix64(seed: seed)
            for step in 0..<2_000 {
                let outside = (0..<Self.nodeCount).map { node(page, $0) }.filter { !model.contains($0) }
                switch random.next() % 4 {
                case 0 where !outside.isEmpty:
                    let chosen = outside[Int(random.next() % UInt64(outside.count))]
                    #expect(list.isUnlinked(chosen), "seed \(seed) step \(step): a free node has links")
                    list.pushFront(chosen)
                    model.insert(chosen, at: 0)
                case 1 where !outside.isEmpty && hasTail:
                    let chosen = outside[Int(random.next() % UInt64(outside.count))]
                    list.pushBack(chosen)
                    model.append(chosen)
                case 2 where !model.isEmpty:
                    let index = Int(random.next() % UInt64(model.count))
                    list.remove(model.remove(at: index))
                default:
                    let popped = list.popFront()
                    #expect(popped == model.first, "seed \(seed) step \(step): popFront")
                    if !model.isEmpty { model.removeFirst() }
                }
                try #require(holds(list, model), "seed \(seed) step \(step): the list differs from the model")
                let member = node(page, Int(random.next() % UInt64(Self.nodeCount)))
                #expect(list.contains(member) == model.contains(member), "seed \(seed) step \(step): contains")
            }
        }
    }

    @Test("a node may remove itself while forEach walks the list")
    func removeWhileWalking() {
        let page = rawPages(2)
        defer { page.deallocate() }
        let list = IntrusiveList(anchor: page, linkOffset: Self.linkOffset, hasTail: true)
        for index in 0..<10 { list.pushBack(node(page, index)) }
        list.forEach { if (Int(bitPattern: $0) / 64) % 2 == 0 { list.remove($0) } }
        #expect(holds(list, (0..<10).map { node(page, $0) }.filter { (Int(bitPattern: $0) / 64) % 2 != 0 }))
    }

    @Test("the integrity walker names broken links, a wrong tail and a cycle")
    func integrityViolations() {
        let page = rawPages(2)
        defer { page.deallocate() }
        let list = IntrusiveList(anchor: page, linkOffset: Self.linkOffset, hasTail: true)
        let (a, b, c) = (node(page, 0), node(page, 1), node(page, 2))
        for each in [a, b, c] { list.pushBack(each) }
        #expect(list.integrityViolation() == nil)
        // b no longer links back to a.
        b.storeBytes(of: c, toByteOffset: Self.linkOffset, as: UnsafeMutableRawPointer?.self)
        #expect(list.integrityViolation()?.contains("links back") == true)
        b.storeBytes(of: a, toByteOffset: Self.linkOffset, as: UnsafeMutableRawPointer?.self)
        // The tail names b, the last node is c.
        page.storeBytes(of: b, toByteOffset: 8, as: UnsafeMutableRawPointer?.self)
        #expect(list.integrityViolation()?.contains("the tail") == true)
        page.storeBytes(of: c, toByteOffset: 8, as: UnsafeMutableRawPointer?.self)
        // c points on to a, which still links back to nothing: a cycle the limit catches.
        c.storeBytes(of: a, toByteOffset: Self.linkOffset + 8, as: UnsafeMutableRawPointer?.self)
        a.storeBytes(of: c, toByteOffset: Self.linkOffset, as: UnsafeMutableRawPointer?.self)
        #expect(list.integrityViolation(limit: 100) != nil)
    }

    @Test("pushing a node twice traps in debug builds, naming it")
    func doublePushTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let page = rawPages()
            let list = IntrusiveList(anchor: page, linkOffset: 24)
            list.pushFront(page + 64)
            list.pushFront(page + 64)
        }
        expectTrap(result, mentioning: "IntrusiveList.pushFront of 0x")
    }

    @Test("removing another list's first node traps in debug builds")
    func foreignRemoveTraps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let page = rawPages()
            let one = IntrusiveList(anchor: page, linkOffset: 24)
            let other = IntrusiveList(anchor: page + 8, linkOffset: 24)
            one.pushFront(page + 64)
            one.pushFront(page + 128)
            // The first node of `one`: the other list's anchor does not name it.
            other.remove(page + 128)
        }
        expectTrap(result, mentioning: "which is not in this list")
    }
}
