// Temporary directories for file-backed chunks, and what the file system and
// /proc/self/maps say about the files in them.

import Glibc
import Testing

/// A fresh directory under /tmp, removed (with anything left in it) by `body`'s end.
func withTemporaryDirectory<Result>(_ body: (String) throws -> Result) throws -> Result {
    var template = Array("/tmp/largealloc-test-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    let path = try #require(made.map { String(cString: $0) })
    defer {
        for name in directoryEntries(path) { unlink(path + "/" + name) }
        rmdir(path)
    }
    return try body(path)
}

/// The names in a directory, without "." and "..".
func directoryEntries(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafePointer(to: entry.pointee.d_name) {
            $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names
}

/// Lines of /proc/self/maps that map a file under `directory` (deleted or not). The
/// directory is this test's own (mkdtemp), so mappings of other tests never match.
func mappedFiles(under directory: String) -> [String] {
    guard let file = fopen("/proc/self/maps", "r") else { return [] }
    defer { fclose(file) }
    var lines: [String] = []
    var buffer = [CChar](repeating: 0, count: 4096)
    while fgets(&buffer, Int32(buffer.count), file) != nil {
        let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if line.contains(directory + "/") { lines.append(line) }
    }
    return lines
}
