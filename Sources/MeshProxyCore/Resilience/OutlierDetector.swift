/// Envoy's outlier detection at L4, configured by Istio's `outlierDetection`: consecutive
/// connect failures, resets and connect timeouts of an endpoint are gateway errors (Envoy maps
/// local-origin failures to 503, so they count toward both `consecutive5xxErrors` and
/// `consecutiveGatewayErrors`); reaching the threshold ejects the endpoint for
/// `baseEjectionTime × times ejected` (capped at max(300 s, base)), never more than
/// `maxEjectionPercent` of the service's endpoints at once; a success resets the count.
/// Ejected endpoints are unhealthy to the traffic planner, which is how traffic spills.
///
/// Pure: time comes in as `now`; the shell reports connect results and sweeps on a timer.
package struct OutlierDetector: Sendable {
    package struct Settings: Sendable, Equatable {
        /// Consecutive gateway errors that eject; nil disables detection for the service.
        package var threshold: Int?
        package var interval: Duration
        package var baseEjectionTime: Duration
        package var maxEjectionPercent: Int

        /// Istio's defaults: consecutive5xxErrors 5 (0 disables), consecutiveGatewayErrors unset,
        /// interval 10 s, baseEjectionTime 30 s, maxEjectionPercent 10.
        package init(_ od: OutlierDetection) {
            let fiveXX = od.consecutive5xxErrors ?? 5
            let gateway = od.consecutiveGatewayErrors ?? 0
            threshold = [fiveXX, gateway].filter { $0 > 0 }.min()
            interval = od.interval?.duration ?? .seconds(10)
            baseEjectionTime = od.baseEjectionTime?.duration ?? .seconds(30)
            maxEjectionPercent = min(100, max(0, od.maxEjectionPercent ?? 10))
        }
    }

    struct HostState: Sendable {
        var consecutiveErrors = 0
        var timesEjected = 0
        var ejectedUntil: ContinuousClock.Instant?
        var lastHealthySweep: ContinuousClock.Instant?
    }

    /// What changed, for the shell to rebuild the plan and count (Envoy's stat names).
    package enum Event: Sendable, Equatable {
        case ejected(ServiceKey, HostPort, for: Duration)
        case restored(ServiceKey, HostPort)
        /// The threshold was reached but `maxEjectionPercent` forbade another ejection.
        case overflow(ServiceKey, HostPort)
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
        hosts = hosts.filter { settings[$0.key]?.threshold != nil }
    }

    package func ejected(_ service: ServiceKey) -> Set<HostPort> {
        Set((hosts[service] ?? [:]).filter { $0.value.ejectedUntil != nil }.keys)
    }

    package var ejectedByService: [ServiceKey: Set<HostPort>] {
        hosts.mapValues { Set($0.filter { $0.value.ejectedUntil != nil }.keys) }.filter { !$0.value.isEmpty }
    }


    /// A connect to `host` failed (refused, reset, timed out).
    package mutating func failed(_ service: ServiceKey, _ host: HostPort, now: ContinuousClock.Instant) -> [Event] {
        guard let config = settings[service], let threshold = config.threshold else { return [] }
        var state = hosts[service]?[host] ?? HostState()
        state.consecutiveErrors += 1
        var events: [Event] = []
        if state.ejectedUntil == nil, state.consecutiveErrors >= threshold {
            let active = ejected(service).count
            let total = max(1, hostCounts[service] ?? 1)
            // Envoy: eject when (active + 1) / hosts stays within maxEjectionPercent.
            if Double(active + 1) * 100 / Double(total) <= Double(config.maxEjectionPercent) {
                state.timesEjected += 1
                let duration = min(config.baseEjectionTime * state.timesEjected, max(.seconds(300), config.baseEjectionTime))
                state.ejectedUntil = now + duration
                state.consecutiveErrors = 0
                events.append(.ejected(service, host, for: duration))
            } else {
                events.append(.overflow(service, host))
            }
        }
        hosts[service, default: [:]][host] = state
        return events
    }

    /// A connect to `host` succeeded: its run of errors is over.
    package mutating func succeeded(_ service: ServiceKey, _ host: HostPort) {
        guard hosts[service]?[host] != nil else { return }
        hosts[service]?[host]?.consecutiveErrors = 0
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
                        state.consecutiveErrors = 0
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
