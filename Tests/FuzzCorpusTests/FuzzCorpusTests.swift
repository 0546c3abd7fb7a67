import Foundation
import Testing
@testable import EastWestFuzz
import MeshProxyCore

/// Every committed fuzz input — the seed corpus and every crash the fuzzer found — run as an
/// ordinary test, so a fixed crash stays fixed without a sanitizer build (fuzz/run.sh runs the
/// fuzzer itself). A trap fails the run; the checks inside each target (round trips, error
/// positions) fail it too.
@Suite("Fuzz corpus and crash inputs replayed")
struct FuzzCorpusTests {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("fuzz")

    static func inputs(_ target: FuzzTarget) -> [(name: String, bytes: [UInt8])] {
        ["corpus", "crashes"].flatMap { kind -> [(name: String, bytes: [UInt8])] in
            let directory = fuzzDirectory.appendingPathComponent(kind).appendingPathComponent(target.rawValue)
            let files = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            return files.sorted().compactMap { name in
                FileManager.default.contents(atPath: directory.appendingPathComponent(name).path).map { ("\(kind)/\(name)", Array($0)) }
            }
        }
    }

    @Test("Each target's inputs run to an answer", arguments: FuzzTarget.allCases)
    func replays(_ target: FuzzTarget) {
        let inputs = Self.inputs(target)
        #expect(inputs.count >= 4, "the \(target.rawValue) corpus is missing (\(inputs.count) inputs)")
        for input in inputs {
            #expect(!target.run(input.bytes).isEmpty, "\(input.name)")
        }
    }

    @Test("Seeds from real clients and peers are understood as a gateway would understand them")
    func seedsMeanWhatTheySay() throws {
        func outcome(_ target: FuzzTarget, _ name: String) throws -> String {
            let bytes = try #require(Self.inputs(target).first { $0.name == "corpus/\(name)" }?.bytes, "no seed \(name)")
            return target.run(bytes)
        }
        #expect(try outcome(.clientHello, "openssl-istio-sni") == "server name outbound_.8080_.v2_.echo.default.svc.cluster.local")
        #expect(try outcome(.clientHello, "curl-h2-alpn") == "server name ratings.default.svc.cluster.local")
        #expect(try outcome(.clientHello, "oversized-record") == "refused: ClientHello record of 16385 bytes is larger than TLS allows (16384)")
        #expect(try outcome(.gossip, "deltas") == "2 decoded, 0 dropped, 0 bytes waiting")
        #expect(try outcome(.config, "gateway.yaml").hasPrefix("gateway.yaml: valid"))
        #expect(try outcome(.config, "two-clusters.yaml").contains("topology.yaml: valid"))
        #expect(try outcome(.adminJSON, "register").hasPrefix("registration accepted"))
        #expect(try outcome(.adminJSON, "fault-zone").hasSuffix("fault accepted"))
    }

    @Test("Found by fuzzing: a registration with locality \"/\" was accepted and arrived at every peer with no locality; it is refused")
    func emptyLocality() throws {
        let bytes = try #require(Self.inputs(.adminJSON).first { $0.name == "crashes/empty-locality-does-not-round-trip" }?.bytes)
        #expect(FuzzTarget.adminJSON.run(bytes).hasPrefix("registration refused: locality '/' is not region/zone/subzone"))
    }

    @Test("Found by fuzzing: a fault duration beyond 292 years trapped the gateway; it is refused like any bad duration")
    func hugeDuration() throws {
        let bytes = try #require(Self.inputs(.adminJSON).first { $0.name == "crashes/duration-beyond-int64-nanoseconds" }?.bytes)
        #expect(FuzzTarget.adminJSON.run(bytes).contains("fault refused: duration"))
        #expect(ConfigDuration(parsing: "1e30s") == nil && ConfigDuration(parsing: "100000h") != nil)
    }

    @Test("A frame header claiming more than the message limit closes the stream before anything is buffered")
    func oversizedFrame() {
        #expect(FuzzTarget.gossip.run([0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3])
                == "0 decoded, 0 dropped, then the stream was closed: message of 4294967295 bytes exceeds the 4194304-byte limit")
    }

    @Test("A registration the wire could not carry whole is refused at the admin API (labels over Kubernetes' limits)")
    func registrationLimits() {
        let many = (0..<65).map { "\"k\($0)\": \"v\"" }.joined(separator: ", ")
        #expect(FuzzTarget.adminJSON.run(Array(#"{"host": "a.b", "port": 1, "address": "1.2.3.4:5", "labels": {\#(many)}}"#.utf8))
                .hasPrefix("registration refused: at most 64 labels (got 65)"))
        let long = String(repeating: "x", count: 64)
        #expect(FuzzTarget.adminJSON.run(Array(#"{"host": "a.b", "port": 1, "address": "1.2.3.4:5", "labels": {"k": "\#(long)"}}"#.utf8))
                .hasPrefix("registration refused: label 'k' has a value that is not a Kubernetes label value"))
    }
}
