import MeshProxyCore
/// A failover drill (`topologies/drills/*.yaml`): a topology, policies, open-loop load from one
/// cluster, faults on a schedule, and what must hold.
///
/// ```yaml
/// name: region-failover
/// topology: ../three-regions.yaml        # relative to this file
/// policies: [../policies/echo-failover.yaml]
/// duration: 60s
/// load: {from: us-east, host: echo.default.svc.cluster.local, concurrency: 16, rate: 400}  # protocol: http1|http2|tcp, keepAlive
/// steps:
/// - {at: 10s, action: kill, target: {region: us-west1, what: backends}}
/// - {at: 30s, action: restart, target: {region: us-west1, what: backends}}
/// expect: {maxErrorRate: 0.01, maxFailoverSeconds: 3, maxFailbackSeconds: 10}
/// ```
package struct DrillScenario: Codable, Sendable, Equatable {
    package var name: String
    package var topology: String
    package var policies: [String]?
    package var duration: ConfigDuration
    package var load: Load
    package var steps: [Step]
    package var expect: Expectations?

    package struct Load: Codable, Sendable, Equatable {
        /// The cluster whose client identity sends the load, through its first gateway.
        package var from: String
        package var host: String
        /// Connections in flight at most.
        package var concurrency: Int?
        /// Requests per second, open loop (each a new mTLS connection).
        package var rate: Int
        /// A request that has no answer after this is a timeout. Default 2s.
        package var timeout: ConfigDuration?
        /// `http1` (default: an HTTP/1.1 GET, whatever the service speaks), `http2`, or `tcp`
        /// (an HTTP/1.0 GET, then read until the server closes).
        package var `protocol`: LoadProfile.WireProtocol?
        /// Requests on kept connections (`concurrency` of them) rather than a new mTLS
        /// connection each. Default false.
        package var keepAlive: Bool?
    }

    package enum Action: String, Codable, Sendable, CaseIterable {
        case kill, stop, resume, restart, partition, heal, loss, blackhole, unblackhole
        /// Steps that change firewall rules need root.
        package var needsRoot: Bool { self == .partition || self == .heal || self == .loss }
        /// Steps that end an earlier fault (a failback is measured from them).
        package var isRecovery: Bool { self == .restart || self == .resume || self == .heal || self == .unblackhole }
    }

    package struct Target: Codable, Sendable, Equatable {
        package var cluster: String?
        package var region: String?
        package var zone: String?
        package var gateway: String?
        /// A service host: only its endpoints.
        package var service: String?
        /// `backends` (default), `gateways` or `all`.
        package var what: What?
        /// For partition, heal and loss: the two clusters whose addresses are cut apart.
        package var between: [String]?

        package enum What: String, Codable, Sendable { case backends, gateways, all }
    }

    package struct Step: Codable, Sendable, Equatable {
        package var at: ConfigDuration
        package var action: Action
        package var target: Target
        /// For `loss`: percent of packets dropped between the two clusters.
        package var percent: Double?
        /// For `blackhole`: how long the gateways keep it (default: to the end of the drill).
        package var duration: ConfigDuration?
    }

    package struct Expectations: Codable, Sendable, Equatable {
        package var maxErrorRate: Double?
        package var maxFailoverSeconds: Double?
        package var maxFailbackSeconds: Double?
    }
}

extension DrillScenario: ConfigValidatable {
    package func validate(_ map: SourceMap) -> [ConfigError] {
        var errors: [ConfigError] = []
        let root = FieldPath()
        if name.isEmpty { errors.append(map.error(.invalidValue, at: root.key("name"), "must not be empty")) }
        if duration.duration < .seconds(1) { errors.append(map.error(.invalidValue, at: root.key("duration"), "must be at least 1s")) }
        if load.rate < 1 { errors.append(map.error(.invalidValue, at: root.key("load").key("rate"), "must be at least 1 request per second")) }
        if let c = load.concurrency, c < 1 { errors.append(map.error(.invalidValue, at: root.key("load").key("concurrency"), "must be at least 1")) }
        for (i, step) in steps.enumerated() {
            let path = root.key("steps").index(i)
            if step.at.duration >= duration.duration {
                errors.append(map.error(.invalidValue, at: path.key("at"), "\(step.at) is not before the end of the drill (\(duration))"))
            }
            switch step.action {
            case .partition, .heal, .loss:
                if step.target.between?.count != 2 {
                    errors.append(map.error(.invalidValue, at: path.key("target"), "\(step.action.rawValue) needs 'between: [clusterA, clusterB]'"))
                }
                if step.action == .loss, !(0 < (step.percent ?? 0) && (step.percent ?? 0) <= 100) {
                    errors.append(map.error(.invalidValue, at: path.key("percent"), "loss needs a percent from 0 (exclusive) to 100"))
                }
            case .blackhole:
                let t = step.target
                if t.cluster == nil, t.region == nil, t.zone == nil {
                    errors.append(map.error(.invalidValue, at: path.key("target"), "blackhole needs a cluster, region or zone"))
                }
            case .unblackhole:
                break
            case .kill, .stop, .resume, .restart:
                let t = step.target
                if t.cluster == nil, t.region == nil, t.zone == nil, t.gateway == nil, t.service == nil {
                    errors.append(map.error(.invalidValue, at: path.key("target"), "name a cluster, region, zone, gateway or service"))
                }
            }
        }
        return errors
    }
}
