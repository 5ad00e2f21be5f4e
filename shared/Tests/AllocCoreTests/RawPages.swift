// Page-aligned memory for the tests of the raw-memory types (atomics on raw words,
// futexes), from malloc rather than SystemMemory.

/// Page-aligned raw memory for the raw-memory types, freed by the caller. It comes from
/// malloc rather than SystemMemory so that the tests that check SystemMemory's
/// process-wide counters see only their own mappings.
func rawPages(_ count: Int = 1) -> UnsafeMutableRawPointer {
    let memory = UnsafeMutableRawPointer.allocate(byteCount: count * 4096, alignment: 4096)
    memory.initializeMemory(as: UInt8.self, repeating: 0, count: count * 4096)
    return memory
}
