// Running a child process and collecting what it printed, how it ended and what it cost:
// for the benchmark harness (each cell in its own process) and for tests of programs
// run under LD_PRELOAD. Not for allocator fast paths: it allocates freely.

import CAllocCore
import Glibc

/// A finished child process.
public struct ChildProcessResult: Sendable {
    /// The exit status, or nil when a signal ended it.
    public var exitStatus: Int32?
    /// The signal that ended it, if one did.
    public var terminatingSignal: Int32?
    public var standardOutput: [UInt8]
    public var standardError: [UInt8]
    /// wait4's ru_maxrss in bytes. Linux carries this figure across exec, and a spawned
    /// child starts out sharing its parent's pages, so it is at least the parent's peak
    /// at spawn time: for the child's own peak, let it report
    /// ``SystemInfo/peakResidentBytes`` itself.
    public var maximumResidentBytesIncludingParent: Int
    /// CPU time in user and system mode, in nanoseconds.
    public var userNanoseconds: Int
    public var systemNanoseconds: Int

    /// Whether the child exited with status 0.
    public var succeeded: Bool { exitStatus == 0 }

    /// Standard output decoded as UTF-8.
    public var outputText: String { String(decoding: standardOutput, as: UTF8.self) }
    /// Standard error decoded as UTF-8.
    public var errorText: String { String(decoding: standardError, as: UTF8.self) }
}

/// Runs programs with posix_spawn and waits for them with wait4.
public enum ChildProcess {
    /// Runs `executable` (a path) with `arguments`, in this process's environment plus
    /// `environment` (which overrides), with standard input from /dev/null, and returns
    /// once it exits. Standard output and error are captured; with `forwardStandardError`
    /// the child writes its standard error straight to ours instead (progress output).
    public static func run(
        _ executable: String, arguments: [String] = [], environment: [String: String] = [:],
        forwardStandardError: Bool = false
    ) throws(SystemError) -> ChildProcessResult {
        var outputPipe: [Int32] = [0, 0]
        var errorPipe: [Int32] = [0, 0]
        guard alloc_core_pipe_cloexec(&outputPipe) == 0 else { throw SystemError(.pipe, code: errno) }
        defer { close(outputPipe[0]) }
        if !forwardStandardError {
            guard alloc_core_pipe_cloexec(&errorPipe) == 0 else {
                close(outputPipe[1])
                throw SystemError(.pipe, code: errno)
            }
        }
        defer { if !forwardStandardError { close(errorPipe[0]) } }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outputPipe[1], 1)
        if !forwardStandardError { posix_spawn_file_actions_adddup2(&actions, errorPipe[1], 2) }

        // The child starts with no blocked signals and every signal at its default, whatever
        // the caller (a test runner, a benchmark driver) has set for itself.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        var allSignals = sigset_t()
        sigemptyset(&noSignals)
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var merged: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") {
                merged[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            entry += 1
        }
        for (name, value) in environment { merged[name] = value }

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in envp { free(pointer) }
        }
        var pid = pid_t()
        let spawnError = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        close(outputPipe[1])
        if !forwardStandardError { close(errorPipe[1]) }
        guard spawnError == 0 else { throw SystemError(.spawn, code: spawnError) }

        var output: [UInt8] = []
        var errorOutput: [UInt8] = []
        let drainError: SystemError?
        do {
            try drain(outputPipe[0], into: &output, and: forwardStandardError ? nil : errorPipe[0], into: &errorOutput)
            drainError = nil
        } catch {
            drainError = error
        }

        // Reaped on every path, so no child is left a zombie.
        var status: Int32 = 0
        var usage = rusage()
        while wait4(pid, &status, 0, &usage) < 0 {
            guard errno == EINTR else { throw SystemError(.wait, code: errno) }
        }
        if let drainError { throw drainError }
        let exited = status & 0x7f == 0
        return ChildProcessResult(
            exitStatus: exited ? (status >> 8) & 0xff : nil,
            terminatingSignal: exited ? nil : status & 0x7f,
            standardOutput: output, standardError: errorOutput,
            maximumResidentBytesIncludingParent: usage.ru_maxrss * 1024,
            userNanoseconds: usage.ru_utime.tv_sec * 1_000_000_000 + usage.ru_utime.tv_usec * 1000,
            systemNanoseconds: usage.ru_stime.tv_sec * 1_000_000_000 + usage.ru_stime.tv_usec * 1000)
    }

    /// Reads both pipes until both are closed, without letting either fill up.
    static func drain(
        _ first: Int32, into firstBytes: inout [UInt8], and second: Int32?, into secondBytes: inout [UInt8]
    ) throws(SystemError) {
        var open = [pollfd(fd: first, events: Int16(POLLIN), revents: 0)]
        if let second { open.append(pollfd(fd: second, events: Int16(POLLIN), revents: 0)) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            if poll(&open, nfds_t(open.count), -1) < 0 {
                if errno == EINTR { continue }
                throw SystemError(.read, code: errno)
            }
            var index = 0
            while index < open.count {
                guard open[index].revents != 0 else { index += 1; continue }
                let descriptor = open[index].fd
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count > 0 {
                    if descriptor == first {
                        firstBytes.append(contentsOf: buffer[..<count])
                    } else {
                        secondBytes.append(contentsOf: buffer[..<count])
                    }
                    index += 1
                } else if count < 0 && errno == EINTR {
                    index += 1
                } else {
                    open.remove(at: index)
                }
            }
        }
    }
}
