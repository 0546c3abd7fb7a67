import MeshProxyCore
import Foundation

extension DrillReport {
    private static func seconds(_ value: Double?) -> String { value.map { String(format: "%.1f s", $0) } ?? "never" }

    /// How the load was sent, in words.
    private var loadDescription: String {
        let wire = (load?.protocol ?? .http1).rawValue
        return load?.keepAlive == true ? "\(wire) on \(load?.concurrency ?? 16) kept mTLS connections" : "\(wire), each request a new mTLS connection"
    }

    /// The post-drill review in Markdown.
    package var markdown: String {
        var lines = ["# Drill \(name): \(passed ? "PASSED" : "FAILED")", "",
                     "Load: \(rate) requests/s from `\(from)` to `\(host)` for \(Int(durationSeconds)) s, \(loadDescription).", "",
                     "| sent | succeeded | failed | error rate |", "|---|---|---|---|",
                     "| \(sent) | \(succeeded) | \(failed.values.reduce(0, +))\(failed.isEmpty ? "" : " (" + failed.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")") | \(String(format: "%.4f", errorRate)) |", ""]
        if let opened = gatewayOpenedConnections {
            let unit = load?.protocol == .tcp || load?.protocol == nil && load?.keepAlive != true ? "proxied connections or requests" : "requests"
            lines += ["The client-side gateway counted \(opened) \(unit) for `\(host)` (the load generator: \(succeeded) succeeded).", ""]
        }
        if let retries = gatewayRetries, retries > 0 {
            lines += ["The client-side gateway retried \(retries) attempts (`envoy_cluster_upstream_rq_retry`); the clients saw \(failed.values.reduce(0, +)) failures.", ""]
        }
        lines += ["## Faults", "", "| step | at | fault | detected | failed over | failed back | requests / failures until recovered |", "|---|---|---|---|---|---|---|"]
        for f in faults {
            lines.append("| \(f.step + 1) | \(String(format: "%.1f s", f.at)) | \(f.description) | \(Self.seconds(f.detectSeconds)) | \(Self.seconds(f.failoverSeconds)) | \(f.recoveryStep == nil ? "-" : Self.seconds(f.failbackSeconds)) | \(f.requestsUntilRecovered) / \(f.failuresUntilRecovered) |")
        }
        lines += ["", "## Phases", "", "| from | to | after | sent | failed |", "|---|---|---|---|---|"]
        for phase in phases {
            lines.append(String(format: "| %.1f s | %.1f s | ", phase.from, phase.to) + "\(phase.after) | \(phase.sent) | \(phase.failed) |")
        }
        lines += ["", "## Expectations", "", "| check | limit | observed | |", "|---|---|---|---|"]
        for check in checks {
            lines.append("| \(check.name) | \(check.limit) | \(check.observed.map { String(format: "%.4g", $0) } ?? "never") | \(check.passed ? "ok" : "**FAILED**") |")
        }
        lines += ["", "## Every second", "", "| s | sent | ok | failed | served by | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
        for s in timeline {
            let served = s.byLocality.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            lines.append("| \(s.second) | \(s.sent) | \(s.succeeded) | \(s.failures) | \(served) | \(s.latencyP50Ms.map { String(format: "%.1f", $0) } ?? "-") | \(s.latencyP99Ms.map { String(format: "%.1f", $0) } ?? "-") |")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A self-contained page: the summary and an SVG timeline (share served per cluster,
    /// errors, p99, faults and recoveries marked).
    package func html(faultMarks: [DrillFault]) -> String {
        let width = 900.0, height = 300.0, left = 50.0, bottom = 30.0
        let plotWidth = width - left - 20, plotHeight = height - bottom - 20
        let count = max(1, timeline.count)
        let barWidth = plotWidth / Double(count)
        let clusters = Array(Set(timeline.flatMap { $0.byCluster.keys })).sorted()
        let palette = ["#4e79a7", "#59a14f", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1", "#9c755f"]
        let maxP99 = max(1, timeline.compactMap(\.latencyP99Ms).max() ?? 1)
        var svg = ["<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"timeline\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\">",
                   "<rect x=\"\(left)\" y=\"20\" width=\"\(plotWidth)\" height=\"\(plotHeight)\" fill=\"#fafafa\" stroke=\"#ccc\"/>"]
        for (i, second) in timeline.enumerated() {
            let total = max(1, second.sent)
            var y = 20 + plotHeight
            for (c, cluster) in clusters.enumerated() {
                let h = plotHeight * Double(second.byCluster[cluster, default: 0]) / Double(total)
                guard h > 0 else { continue }
                y -= h
                svg.append("<rect class=\"share\" x=\(String(format: "\"%.1f\"", left + Double(i) * barWidth)) y=\(String(format: "\"%.1f\"", y)) width=\(String(format: "\"%.1f\"", barWidth)) height=\(String(format: "\"%.1f\"", h)) fill=\"\(palette[c % palette.count])\"><title>\(second.second) s: \(cluster) \(second.byCluster[cluster, default: 0])</title></rect>")
            }
            let errors = plotHeight * Double(second.failures) / Double(total)
            if errors > 0 {
                svg.append("<rect class=\"errors\" x=\(String(format: "\"%.1f\"", left + Double(i) * barWidth)) y=\(String(format: "\"%.1f\"", y - errors)) width=\(String(format: "\"%.1f\"", barWidth)) height=\(String(format: "\"%.1f\"", errors)) fill=\"#e15759\"><title>\(second.second) s: \(second.failures) failed</title></rect>")
            }
        }
        let p99 = timeline.enumerated().compactMap { i, s in
            s.latencyP99Ms.map { String(format: "%.1f,%.1f", left + (Double(i) + 0.5) * barWidth, 20 + plotHeight * (1 - $0 / maxP99)) }
        }
        if !p99.isEmpty { svg.append("<polyline class=\"p99\" points=\"\(p99.joined(separator: " "))\" fill=\"none\" stroke=\"#333\" stroke-width=\"1.5\"/>") }
        for mark in faultMarks {
            let x = left + mark.at * barWidth
            let color = mark.isRecovery ? "#2ca02c" : "#d62728"
            svg.append("<line class=\"\(mark.isRecovery ? "heal" : "fault")\" x1=\"\(x)\" y1=\"20\" x2=\"\(x)\" y2=\"\(20 + plotHeight)\" stroke=\"\(color)\" stroke-width=\"2\" stroke-dasharray=\"4 3\"><title>\(Self.escape(mark.description))</title></line>")
        }
        svg.append("<text x=\"\(left)\" y=\"\(height - 8)\" font-size=\"12\">0 s</text><text x=\"\(width - 60)\" y=\"\(height - 8)\" font-size=\"12\">\(timeline.count) s</text>")
        svg.append("<text x=\"4\" y=\"16\" font-size=\"12\">share served per cluster (bars), failures (red), p99 (line, max \(Int(maxP99)) ms)</text>")
        svg.append("</svg>")
        let legend = clusters.enumerated().map { "<span style=\"color:\(palette[$0 % palette.count])\">&#9632; \(Self.escape($1))</span>" }.joined(separator: " ")
        let rows = faults.map { f in
            "<tr><td>\(f.step + 1)</td><td>\(String(format: "%.1f s", f.at))</td><td>\(Self.escape(f.description))</td><td>\(Self.seconds(f.detectSeconds))</td><td>\(Self.seconds(f.failoverSeconds))</td><td>\(f.recoveryStep == nil ? "-" : Self.seconds(f.failbackSeconds))</td></tr>"
        }.joined()
        let checkRows = checks.map { "<tr><td>\($0.name)</td><td>\($0.limit)</td><td>\($0.observed.map { String(format: "%.4g", $0) } ?? "never")</td><td>\($0.passed ? "ok" : "<b>FAILED</b>")</td></tr>" }.joined()
        return """
            <!DOCTYPE html>
            <html><head><meta charset="utf-8"><title>Drill \(Self.escape(name))</title>
            <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style></head>
            <body><h1>Drill \(Self.escape(name)): \(passed ? "PASSED" : "FAILED")</h1>
            <p>\(rate) requests/s from \(Self.escape(from)) to \(Self.escape(host)); \(sent) sent, \(succeeded) succeeded, error rate \(String(format: "%.4f", errorRate)).</p>
            <p>\(legend) <span style="color:#e15759">&#9632; failed</span></p>
            \(svg.joined(separator: "\n"))
            <h2>Faults</h2><table><tr><th>step</th><th>at</th><th>fault</th><th>detected</th><th>failed over</th><th>failed back</th></tr>\(rows)</table>
            <h2>Expectations</h2><table><tr><th>check</th><th>limit</th><th>observed</th><th></th></tr>\(checkRows)</table>
            </body></html>

            """
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
            .replacingOccurrences(of: "\"", with: "&quot;")
    }
}
