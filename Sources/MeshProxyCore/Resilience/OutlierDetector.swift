/// Envoy's outlier detection (`DetectorImpl`), configured by Istio's `outlierDetection`, for L4
/// and L7 alike. What an endpoint did comes in as an `OutlierResult`: an HTTP status, or a
/// local-origin event (connect failure, reset, timeout). Without `splitExternalLocalOriginErrors`
/// (Istio's default) local-origin failures count as 503 (504 for a timeout), so they feed both
/// `consecutive5xxErrors` and `consecutiveGatewayErrors`; with it they count only toward
/// `consecutiveLocalOriginFailures`. Reaching a threshold ejects the endpoint for
/// `baseEjectionTime × times ejected` (capped at max(300 s, base)), never more than
/// `maxEjectionPercent` of the service's endpoints at once. Ejected endpoints are unhealthy to
/// the traffic planner, which is how traffic spills.
///
/// Pure: time comes in as `now`; the shell reports results and sweeps on a timer.
package struct OutlierDetector: Sendable {
    package struct Settings: Sendable, Equatable {
        /// `consecutive_5xx` when enforced (Istio: unset is Envoy's 5, 0 turns it off).
        package var consecutive5xx: Int?
        /// `consecutive_gateway_failure` when enforced (Istio: only when set above 0).
        package var consecutiveGatewayFailure: Int?
        /// `split_external_local_origin_errors`.
        package var splitLocalOrigin: Bool
        /// `consecutive_local_origin_failure` when split (Istio: the value above 0, else Envoy's 5).
        package var consecutiveLocalOriginFailure: Int?
        package var interval: Duration
        package var baseEjectionTime: Duration
        package var maxEjectionPercent: Int

        /// Istio's translation (cluster_traffic_policy.go `applyOutlierDetection`): interval 10 s,
        /// baseEjectionTime 30 s, maxEjectionPercent 10 unless set.
        package init(_ od: OutlierDetection) {
            let fiveXX = od.consecutive5xxErrors ?? 5
            consecutive5xx = fiveXX > 0 ? fiveXX : nil
            consecutiveGatewayFailure = (od.consecutiveGatewayErrors ?? 0) > 0 ? od.consecutiveGatewayErrors : nil
            splitLocalOrigin = od.splitExternalLocalOriginErrors ?? false
            consecutiveLocalOriginFailure = splitLocalOrigin ? ((od.consecutiveLocalOriginFailures ?? 0) > 0 ? od.consecutiveLocalOriginFailures : 5) : nil
            interval = od.interval?.duration ?? .seconds(10)
            baseEjectionTime = od.baseEjectionTime?.duration ?? .seconds(30)
            maxEjectionPercent = min(100, max(0, od.maxEjectionPercent ?? 10))
        }

        /// Whether any ejection is enforced for the service.
        package var isEnabled: Bool { consecutive5xx != nil || consecutiveGatewayFailure != nil || consecutiveLocalOriginFailure != nil }
    }

    struct HostState: Sendable {
        var consecutive5xx = 0
        var consecutiveGatewayFailure = 0
        var consecutiveLocalOriginFailure = 0
        var timesEjected = 0
        var ejectedUntil: ContinuousClock.Instant?
        var lastHealthySweep: ContinuousClock.Instant?
    }

    /// What changed, for the shell to rebuild the plan and count (Envoy's stat names).
    package enum Event: Sendable, Equatable {
        case ejected(ServiceKey, HostPort, for: Duration, reason: EjectionReason)
        case restored(ServiceKey, HostPort)
        /// The threshold was reached but `maxEjectionPercent` forbade another ejection.
        case overflow(ServiceKey, HostPort)
    }

    /// Which run ejected an endpoint (Envoy's `ejections_enforced_<reason>` counters).
    package enum EjectionReason: String, Sendable, Equatable {
        case consecutive5xx = "consecutive_5xx"
        case consecutiveGatewayFailure = "consecutive_gateway_failure"
        case consecutiveLocalOriginFailure = "consecutive_local_origin_failure"
    }

    private var settings: [ServiceKey: Settings]
    private var hosts: [ServiceKey: [HostPort: HostState]] = [:]
    private var hostCounts: [ServiceKey: Int]

    /// - Parameters:
    ///   - settings: per service, from its DestinationRule's `outlierDetection`.
    ///   - hostCounts: how many endpoints each service has here (the max-percent base).
    package init(settings: [ServiceKey: Settings], hostCounts: [ServiceKey: Int]) {
        self.settings = settings
        self.hostCounts = hostCounts
    }

    /// Keeps ejection state for endpoints that remain when settings or endpoints change.
    package mutating func reconfigure(settings: [ServiceKey: Settings], hostCounts: [ServiceKey: Int]) {
        self.settings = settings
        self.hostCounts = hostCounts
        hosts = hosts.filter { settings[$0.key]?.isEnabled == true }
    }

    package func ejected(_ service: ServiceKey) -> Set<HostPort> {
        Set((hosts[service] ?? [:]).filter { $0.value.ejectedUntil != nil }.keys)
    }

    package var ejectedByService: [ServiceKey: Set<HostPort>] {
        hosts.mapValues { Set($0.filter { $0.value.ejectedUntil != nil }.keys) }.filter { !$0.value.isEmpty }
    }


    /// A connect to `host` failed, or it reset or closed before answering (Envoy's
    /// `LocalOriginConnectFailed`).
    package mutating func failed(_ service: ServiceKey, _ host: HostPort, now: ContinuousClock.Instant) -> [Event] {
        record(.localOriginFailure, service, host, now: now)
    }

    /// The TCP proxy connected to `host` (`LocalOriginConnectSuccessFinal`: a success).
    package mutating func succeeded(_ service: ServiceKey, _ host: HostPort) {
        _ = record(.connectedFinal, service, host, now: .now)
    }

    /// What `host` did, in Envoy's `putResult` / `putHttpResponseCode` terms.
    package mutating func record(_ result: OutlierResult, _ service: ServiceKey, _ host: HostPort, now: ContinuousClock.Instant) -> [Event] {
        guard let config = settings[service], config.isEnabled else { return [] }
        var state = hosts[service]?[host] ?? HostState()
        var reached: EjectionReason?
        func status(_ code: Int) {
            guard code >= 500 else {
                state.consecutive5xx = 0
                state.consecutiveGatewayFailure = 0
                return
            }
            if [502, 503, 504].contains(code) {
                state.consecutiveGatewayFailure += 1
                if state.consecutiveGatewayFailure == config.consecutiveGatewayFailure { reached = .consecutiveGatewayFailure }
            } else {
                state.consecutiveGatewayFailure = 0
            }
            state.consecutive5xx += 1
            if state.consecutive5xx == config.consecutive5xx, reached == nil { reached = .consecutive5xx }
        }
        switch result {
        case .response(let code):
            status(code)
        case .localOriginFailure, .localOriginTimeout:
            if config.splitLocalOrigin {
                state.consecutiveLocalOriginFailure += 1
                if state.consecutiveLocalOriginFailure == config.consecutiveLocalOriginFailure { reached = .consecutiveLocalOriginFailure }
            } else {
                status(result == .localOriginTimeout ? 504 : 503)
            }
        case .connected:
            // Not a response: only the local-origin run ends (Envoy maps no code to it).
            if config.splitLocalOrigin { state.consecutiveLocalOriginFailure = 0 }
        case .connectedFinal:
            if config.splitLocalOrigin { state.consecutiveLocalOriginFailure = 0 } else { status(200) }
        }
        var events: [Event] = []
        if let reason = reached {
            // Envoy resets the run that reached its threshold, ejected or not.
            switch reason {
            case .consecutive5xx: state.consecutive5xx = 0
            case .consecutiveGatewayFailure: state.consecutiveGatewayFailure = 0
            case .consecutiveLocalOriginFailure: state.consecutiveLocalOriginFailure = 0
            }
        }
        if state.ejectedUntil == nil, let reason = reached {
            let active = ejected(service).count
            let total = max(1, hostCounts[service] ?? 1)
            // Envoy: eject when (active + 1) / hosts stays within maxEjectionPercent.
            if Double(active + 1) * 100 / Double(total) <= Double(config.maxEjectionPercent) {
                state.timesEjected += 1
                let duration = min(config.baseEjectionTime * state.timesEjected, max(.seconds(300), config.baseEjectionTime))
                state.ejectedUntil = now + duration
                events.append(.ejected(service, host, for: duration, reason: reason))
            } else {
                events.append(.overflow(service, host))
            }
        }
        hosts[service, default: [:]][host] = state
        return events
    }

    /// Envoy's interval timer: ejections that ran out end; a healthy host's ejection count
    /// decays by one per interval, so an old ejection stops lengthening new ones.
    package mutating func sweep(now: ContinuousClock.Instant) -> [Event] {
        var events: [Event] = []
        for (service, states) in hosts.sorted(by: { $0.key < $1.key }) {
            guard let config = settings[service] else { continue }
            for (host, var state) in states.sorted(by: { $0.key.description < $1.key.description }) {
                if let until = state.ejectedUntil {
                    if now >= until {
                        state.ejectedUntil = nil
                        state.consecutive5xx = 0
                        state.consecutiveGatewayFailure = 0
                        state.consecutiveLocalOriginFailure = 0
                        state.lastHealthySweep = now
                        events.append(.restored(service, host))
                    }
                } else if state.timesEjected > 0, now - (state.lastHealthySweep ?? now) >= config.interval {
                    state.timesEjected -= 1
                    state.lastHealthySweep = now
                }
                hosts[service]?[host] = state
            }
        }
        return events
    }
}

/// What an endpoint did, as Envoy's router and TCP proxy report it to outlier detection.
package enum OutlierResult: Sendable, Equatable {
    /// An HTTP upstream answered with this status (a gRPC status mapped to HTTP first).
    case response(Int)
    /// A connect failure, or a reset or close before the response (`LocalOriginConnectFailed`).
    case localOriginFailure
    /// A per-try or route timeout (`LocalOriginTimeout`).
    case localOriginTimeout
    /// An HTTP upstream connected (`LocalOriginConnectSuccess`): the response is still to judge.
    case connected
    /// The TCP proxy connected (`LocalOriginConnectSuccessFinal`): the whole verdict.
    case connectedFinal
}
