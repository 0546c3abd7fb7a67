import Foundation
import Testing

@Suite("bench/report.py")
struct BenchReportTests {
    /// Each committed run: its raw results (`.jsonl`) next to the report they produced (`.md`).
    static let runs: [String] = {
        let directory = "\(PackagePaths.root)/bench/results"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return files.filter { $0.hasSuffix(".jsonl") && files.contains($0.replacingOccurrences(of: ".jsonl", with: ".md")) }
            .map { "\(directory)/\($0.dropLast(".jsonl".count))" }.sorted()
    }()

    /// The tables a reader compares: every workload (the first section on), the ratios and the
    /// issues' targets.
    func tables(_ report: String) -> String {
        guard let start = report.range(of: "\n## ") else { return "" }
        let end = report.range(of: "\n## The load generator", range: start.upperBound..<report.endIndex)?.lowerBound ?? report.endIndex
        return report[start.lowerBound..<end].trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("bench/results holds committed runs to check (the test below would pass with none)")
    func runsAreCommitted() {
        #expect(!Self.runs.isEmpty)
    }

    @Test("Every committed run's raw results give back the tables of its committed report", arguments: runs)
    func regeneratesCommittedReport(_ run: String) async throws {
        let generated = try await runCommand("/usr/bin/env", ["python3", "\(PackagePaths.root)/bench/report.py", "\(run).jsonl",
                                                              "--seconds", "10", "--repeats", "3"])
        #expect(generated.status == 0, "\(generated.stderr)")
        let committed = try String(contentsOfFile: "\(run).md", encoding: .utf8)
        #expect(!tables(committed).isEmpty, "no tables in \(run).md")
        #expect(tables(generated.stdout) == tables(committed))
    }
}
