import Foundation

// `eastwest-fuzz TARGET [libFuzzer arguments…]` when built by fuzz/run.sh (with
// `-sanitize=fuzzer -D FUZZING`): libFuzzer drives TARGET. A plain build replays files instead
// (`eastwest-fuzz TARGET FILE|DIR…`), which is how the committed corpus runs anywhere.
//
// SwiftPM links a Linux executable's `main` to the module's own entry point, so libFuzzer's
// `main` can never be the one that links; this one starts libFuzzer's driver itself.

let arguments = CommandLine.arguments
guard arguments.count >= 2, let target = FuzzTarget(rawValue: arguments[1]) else {
    FileHandle.standardError.write(Data("usage: eastwest-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) [FILE|DIR…]\n".utf8))
    exit(2)
}

if arguments.count == 4, arguments[2] == "--write-seeds" {
    for (name, bytes) in target.generatedSeeds {
        FileManager.default.createFile(atPath: "\(arguments[3])/\(name)", contents: Data(bytes))
    }
    exit(0)
}

#if FUZZING
// The target libFuzzer calls: whichever `main` the link keeps, the selection is by name in
// EASTWEST_FUZZ_TARGET (fuzz/run.sh sets it), since libFuzzer's own `main` reads argv itself.
nonisolated(unsafe) let selected: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["EASTWEST_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else { fatalError("EASTWEST_FUZZ_TARGET must name a target, not '\(name)'") }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    selected.run(data.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? [])
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

// libFuzzer sees the program name and its own flags, not the target name.
var driverArguments = [arguments[0]] + arguments.dropFirst(2)
var cStrings: [UnsafeMutablePointer<CChar>?] = driverArguments.map { strdup($0) } + [nil]
var argc = CInt(driverArguments.count)
exit(cStrings.withUnsafeMutableBufferPointer { buffer in
    var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = buffer.baseAddress
    return LLVMFuzzerRunDriver(&argc, &argv) { data, count in fuzzOneInput(data, count) }
})
#else
var files: [URL] = []
for path in arguments.dropFirst(2) {
    let url = URL(fileURLWithPath: path)
    if let entries = try? FileManager.default.contentsOfDirectory(at: url, includingPropertiesForKeys: nil) {
        files += entries.sorted { $0.path < $1.path }
    } else {
        files.append(url)
    }
}
for file in files {
    guard let data = FileManager.default.contents(atPath: file.path) else { continue }
    print("\(file.lastPathComponent): \(target.run(Array(data)))")
}
#endif
