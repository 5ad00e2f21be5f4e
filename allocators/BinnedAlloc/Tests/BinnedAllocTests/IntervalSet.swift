// Live blocks as address intervals: the overlap check of the model and boundary tests.

/// Live blocks as address intervals, sorted by address: reports a new block that overlaps
/// a live one.
struct IntervalSet {
    private(set) var starts: [UInt] = []
    private(set) var ends: [UInt] = []

    var count: Int { starts.count }

    /// The index of the first interval whose start is >= `address`.
    private func lowerBound(_ address: UInt) -> Int {
        var low = 0
        var high = starts.count
        while low < high {
            let middle = (low + high) / 2
            if starts[middle] < address { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Inserts [start, start + length) and returns nil, or returns the live interval it
    /// overlaps (and inserts nothing).
    mutating func insert(start: UInt, length: Int) -> (start: UInt, end: UInt)? {
        let end = start + UInt(max(length, 1))
        let index = lowerBound(start)
        if index < starts.count && starts[index] < end { return (starts[index], ends[index]) }
        if index > 0 && ends[index - 1] > start { return (starts[index - 1], ends[index - 1]) }
        starts.insert(start, at: index)
        ends.insert(end, at: index)
        return nil
    }

    /// Removes the interval that starts at `start`; returns whether there was one.
    @discardableResult
    mutating func remove(start: UInt) -> Bool {
        let index = lowerBound(start)
        guard index < starts.count && starts[index] == start else { return false }
        starts.remove(at: index)
        ends.remove(at: index)
        return true
    }
}
