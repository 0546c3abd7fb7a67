/// Envoy's response flags (access log `%RESPONSE_FLAGS%`, Istio's `response_flags` label), so a
/// user greps our logs with the flags they already know.
package enum ResponseFlag: String, Sendable, CaseIterable {
    /// No route for the server name: no filter chain matched.
    case noRoute = "NR"
    /// No healthy upstream host to try.
    case noHealthyUpstream = "UH"
    /// Upstream connection failure.
    case upstreamConnectionFailure = "UF"
    /// Every allowed connect attempt failed (TCP proxy `max_connect_attempts`).
    case upstreamRetryLimitExceeded = "URX"
    /// Upstream overflow: circuit breaker open.
    case upstreamOverflow = "UO"
    /// The route's `timeout` passed before the response ended (504 when it had not started).
    case upstreamRequestTimeout = "UT"
    /// Idle timeout or max duration.
    case durationTimeout = "DT"
    /// Downstream connection termination before the upstream was reached.
    case downstreamTermination = "DC"
    /// The route's cluster (service, port or subset) does not exist.
    case noClusterFound = "NC"
    /// The upstream connection ended before a response.
    case upstreamConnectionTermination = "UC"
    /// The downstream sent what HTTP does not allow.
    case downstreamProtocolError = "DPE"
    /// A VirtualService `fault.delay` held the request.
    case delayInjected = "DI"
    /// A VirtualService `fault.abort` answered it.
    case faultInjected = "FI"
    /// A local rate limit refused it.
    case rateLimited = "RL"
    /// An ext-authz provider refused it, or could not be asked (Envoy's UnauthorizedExternalService).
    case unauthorizedExternalService = "UAEX"
}
