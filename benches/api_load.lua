-- wrk script for scripts/bench: authorised GETs of the captures list, each connection waiting
-- 10 ms between requests (5 connections ≈ 500 requests/s).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("PCAPD_TOKEN")
function delay()
  return 10
end
