import AllocCore
import Testing

@Suite struct ArithmeticTests {
    @Test func powerOfTwoChecks() {
        #expect(isPowerOfTwo(1) && isPowerOfTwo(2) && isPowerOfTwo(4096) && isPowerOfTwo(1 << 62))
        #expect(
            !isPowerOfTwo(0) && !isPowerOfTwo(3) && !isPowerOfTwo(24) && !isPowerOfTwo(-4) && !isPowerOfTwo(Int.min))
    }

    @Test func alignUpRoundsAndReportsOverflow() {
        #expect(alignUp(0, to: 16) == 0)
        #expect(alignUp(1, to: 16) == 16)
        #expect(alignUp(16, to: 16) == 16)
        #expect(alignUp(17, to: 1) == 17)
        #expect(alignUp(Int.max - 15, to: 16) == Int.max - 15)
        #expect(alignUp(Int.max - 14, to: 16) == nil)
        #expect(alignUp(Int.max, to: 4096) == nil)
        #expect(alignDown(4097, to: 4096) == 4096)
        #expect(alignDown(4095, to: 4096) == 0)
        let pointer = UnsafeMutableRawPointer(bitPattern: 0x1001)!
        #expect(alignUp(pointer, to: 0x1000) == UnsafeMutableRawPointer(bitPattern: 0x2000))
        #expect(alignUp(UnsafeMutableRawPointer(bitPattern: UInt.max)!, to: 16) == nil)
        #expect(isAligned(UnsafeRawPointer(bitPattern: 0x2000)!, to: 0x1000))
        #expect(!isAligned(UnsafeRawPointer(pointer), to: 16))
    }

    @Test func nextPowerOfTwoAndLogarithms() {
        #expect(nextPowerOfTwo(0) == 1 && nextPowerOfTwo(1) == 1 && nextPowerOfTwo(2) == 2)
        #expect(nextPowerOfTwo(3) == 4 && nextPowerOfTwo(1025) == 2048)
        #expect(nextPowerOfTwo(1 << 62) == 1 << 62)
        #expect(nextPowerOfTwo((1 << 62) + 1) == nil)
        #expect(nextPowerOfTwo(Int.max) == nil)
        for shift in 0..<63 {
            #expect(log2Floor(1 << shift) == shift)
            #expect(log2Ceiling(1 << shift) == shift)
            if shift > 1 {
                #expect(log2Floor((1 << shift) + 1) == shift)
                #expect(log2Ceiling((1 << shift) + 1) == shift + 1)
            }
        }
    }

    @Test func checkedByteCountRefusesOverflowAndNegatives() {
        #expect(checkedByteCount(count: 10, stride: 8) == 80)
        #expect(checkedByteCount(count: 0, stride: Int.max) == 0)
        #expect(checkedByteCount(count: Int.max / 2 + 1, stride: 2) == nil)
        #expect(checkedByteCount(count: -1, stride: 8) == nil)
        #expect(checkedByteCount(count: 1 << 32, stride: 1 << 31) == nil)
        #expect(checkedByteCount(count: 1 << 31, stride: 1 << 31) == 1 << 62)
        #expect(checkedByteCount(count: UInt(1) << 32, stride: UInt(1) << 32) == nil)
        #expect(checkedByteCount(count: UInt.max, stride: 1) == nil)
        #expect(checkedByteCount(count: UInt(Int.max), stride: 1) == Int.max)
        #expect(checkedByteCount(count: UInt(3), stride: 5) == 15)
    }

    /// Every size up to 64 KiB: its class holds it, the class below does not (the class is
    /// the smallest that fits), sizes are multiples of the quantum, and the waste stays
    /// within one step.
    @Test(arguments: [(16, 4), (16, 1), (8, 2), (16, 8)])
    func sizeClassesAreMinimalAndBounded(quantum: Int, steps: Int) {
        let maximum = 65536
        let classes = SizeClasses(quantum: quantum, stepsPerDoubling: steps, maximumSize: maximum)
        #expect(classes.maximumSize == maximum)
        #expect(classes.size(ofClass: classes.count - 1) == maximum)
        var previousIndex = 0
        for size in 0...maximum {
            let index = classes.index(for: size)
            let classSize = classes.size(ofClass: index)
            #expect(classSize >= size)
            #expect(classSize % quantum == 0)
            if index > 0 { #expect(classes.size(ofClass: index - 1) < max(size, 1)) }
            #expect(index >= previousIndex && index <= previousIndex + 1)
            previousIndex = index
            if size > quantum * steps {
                #expect(Double(classSize - size) < Double(classSize) / Double(steps + 1) + 1)
            } else {
                #expect(classSize - max(size, 1) < quantum)
            }
        }
    }

    @Test func sizeClassesMatchTheDocumentedTable() {
        let classes = SizeClasses(quantum: 16, stepsPerDoubling: 4, maximumSize: 1024)
        let sizes = (0..<classes.count).map { classes.size(ofClass: $0) }
        #expect(
            sizes == [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024])
        #expect(classes.index(for: 65) == 4)
        let powers = SizeClasses(quantum: 65536, stepsPerDoubling: 1, maximumSize: 1 << 36)
        #expect(powers.count == 21)
        #expect(powers.index(for: 65537) == 1 && powers.size(ofClass: 1) == 131072)
        #expect(powers.size(ofClass: powers.count - 1) == 1 << 36)
    }
}

@Suite struct ArithmeticMisuseTests {
    /// Programmer errors trap with a message instead of computing garbage.
    @Test func invalidArgumentsTrap() async {
        await #expect(processExitsWith: .failure) { _ = alignUp(10, to: 24) }
        await #expect(processExitsWith: .failure) { _ = alignUp(-1, to: 16) }
        await #expect(processExitsWith: .failure) { _ = alignDown(10, to: 0) }
        await #expect(processExitsWith: .failure) { _ = log2Floor(0) }
        await #expect(processExitsWith: .failure) {
            _ = SizeClasses(quantum: 1 << 56, stepsPerDoubling: 256, maximumSize: 1 << 56)
        }
        await #expect(processExitsWith: .failure) {
            _ = SizeClasses(quantum: 16, stepsPerDoubling: 4, maximumSize: 1024).index(for: 1025)
        }
    }
}

@Suite struct SplitMix64Tests {
    /// The reference sequence from seed 0, and the same seed replaying the same values.
    @Test func matchesTheReferenceSequenceAndReplays() {
        var generator = SplitMix64(seed: 0)
        #expect(generator.next() == 0xE220_A839_7B1D_CDAF)
        #expect(generator.next() == 0x6E78_9E6A_A1B9_65F4)
        var first = SplitMix64(seed: 1234)
        var second = SplitMix64(seed: 1234)
        #expect((0..<100).map { _ in first.next() } == (0..<100).map { _ in second.next() })
    }
}
