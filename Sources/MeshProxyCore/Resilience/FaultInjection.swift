/// A VirtualService rule's `fault`, compiled as istiod's `TranslateFault` hands it to Envoy's
/// fault filter: shares in parts per million, a fixed delay, an abort by HTTP status or gRPC
/// status. Decided per request from fresh random numbers; pure.
package struct FaultInjection: Sendable, Equatable {
    package struct Delay: Sendable, Equatable {
        package var duration: Duration
        package var perMillion: Int
    }

    package struct Abort: Sendable, Equatable {
        /// The HTTP status (a gRPC abort answers 200 with `grpcStatus`).
        package var httpStatus: Int
        package var grpcStatus: Int?
        package var perMillion: Int
    }

    package var delay: Delay?
    package var abort: Abort?

    /// What one request gets: the delay first, then, independently (`postDelayInjection`), the
    /// abort: a request may get both (`DI,FI`).
    package struct Decision: Sendable, Equatable {
        package var delay: Duration?
        package var abort: Abort?
    }

    /// Envoy's fractional percent roll: `random % 1_000_000 < numerator`.
    package func decide(delayRandom: UInt64, abortRandom: UInt64) -> Decision {
        var decision = Decision()
        if let delay, delayRandom % 1_000_000 < UInt64(delay.perMillion) { decision.delay = delay.duration }
        if let abort, abortRandom % 1_000_000 < UInt64(abort.perMillion) { decision.abort = abort }
        return decision
    }

    /// istiod's translation of a `percentage.value` (double, percent), else the legacy integer
    /// `percent`, else never.
    package static func perMillion(_ percentage: VirtualService.Percent?, legacy: Int? = nil) -> Int {
        if let value = percentage?.value { return Int((value * 10_000).rounded()) }
        if let legacy { return legacy * 10_000 }
        return 0
    }

    /// gRPC status names as Istio's `grpcStatus` takes them.
    package static let grpcStatusCodes: [String: Int] = [
        "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
        "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
        "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
    ]

    package init(delay: Delay? = nil, abort: Abort? = nil) { self.delay = delay; self.abort = abort }

    /// The compiled form of a validated `fault`; nil when it injects nothing.
    package init?(_ fault: VirtualService.HTTPFaultInjection) {
        if let delay = fault.delay, let fixed = delay.fixedDelay?.duration {
            self.delay = Delay(duration: fixed, perMillion: Self.perMillion(delay.percentage, legacy: delay.percent))
        }
        if let abort = fault.abort {
            let grpc = abort.grpcStatus.flatMap { Self.grpcStatusCodes[$0] }
            if let status = grpc != nil ? 200 : abort.httpStatus {
                self.abort = Abort(httpStatus: status, grpcStatus: grpc, perMillion: Self.perMillion(abort.percentage))
            }
        }
        if delay == nil, abort == nil { return nil }
    }
}
