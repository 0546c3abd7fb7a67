import Testing
@testable import EastWest
import MeshProxyCore

@Suite("Drill analysis")
struct DrillAnalysisTests {
    /// 10 s at 10 requests/s: zone a serves until the kill at 3.0 s, second 3 has 4 failures,
    /// zone b serves 4–6, zone a again from 8 after the restart at 7.0 s.
    func timeline() -> [DrillSecond] {
        (0..<10).map { s in
            var second = DrillSecond(second: s)
            second.sent = 10
            let zone = (s < 3 || s >= 8) ? "r/a" : "r/b"
            let failures = s == 3 ? 4 : 0
            second.failed = failures > 0 ? ["connect": failures] : [:]
            second.succeeded = 10 - failures
            second.byLocality = [zone: 10 - failures]
            second.byCluster = ["c": 10 - failures]
            second.plannedShares = (s >= 4 && s < 7) ? ["r/b": 1] : ["r/a": 1]
            return second
        }
    }

    func scenario(_ expect: DrillScenario.Expectations) throws -> DrillScenario {
        var scenario = try ConfigLoader.load(DrillScenario.self, yaml: """
            name: t
            topology: t.yaml
            duration: 10s
            load: {from: c, host: h, rate: 10}
            steps:
            - {at: 3s, action: kill, target: {zone: a}}
            - {at: 7s, action: restart, target: {zone: a}}
            """, file: "t.yaml")
        scenario.expect = expect
        return scenario
    }

    let faults = [
        DrillFault(step: 0, action: "kill", at: 3.0, description: "kill a", clusters: ["c"], localities: ["r/a"], gateways: [], isRecovery: false),
        DrillFault(step: 1, action: "restart", at: 7.0, description: "restart a", clusters: ["c"], localities: ["r/a"], gateways: [], isRecovery: true),
    ]

    @Test("Detection, failover and failback come from the seconds; phases split at the steps; expectations decide pass or fail")
    func analysis() throws {
        let report = DrillAnalysis.report(scenario: try scenario(.init(maxErrorRate: 0.01, maxFailoverSeconds: 2, maxFailbackSeconds: 2)),
                                          timeline: timeline(), faults: faults)
        let fault = try #require(report.faults.first)
        #expect(fault.detectSeconds == 2)      // the plan dropped r/a in second 4, which ends at 5.0
        #expect(fault.failoverSeconds == 1)    // second 4 is the first clean one served by survivors
        #expect(fault.failbackSeconds == 1)    // r/a serves again in second 8
        #expect(report.phases.map(\.sent) == [30, 40, 30] && report.phases.map(\.failed) == [0, 4, 0])
        #expect(report.errorRate == 0.04)
        #expect(report.checks.map(\.passed) == [false, true, true] && !report.passed)
        #expect(report.markdown.contains("| maxErrorRate | 0.01 | 0.04 | **FAILED** |"))
        #expect(report.html(faultMarks: faults).contains("<line class=\"fault\""))
    }
}
