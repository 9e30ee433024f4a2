# One batch of requests from inside a client pod: one `kubectl exec`, many curls.
# Run as: sh -c "$(this file)" meshconf-batch COUNT CONCURRENCY TIMEOUT METHOD URL BODY [-H 'name: value']...
# Prints, per request in order: "@@meshconf <index> <curl exit> <status> <seconds> <started>",
# the response headers, "@@body", the first 3000 bytes of the body, "@@end". <started> is the pod's
# clock (epoch seconds, from date +%s.%N) just before curl ran: what a change's moment is compared with.
count=$1 concurrency=$2 timeout=$3 method=$4 url=$5 body=$6
shift 6
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
seq "$count" | xargs -P "$concurrency" -I{} sh -c '
  d=$1 i=$2 t=$3 m=$4 u=$5 b=$6
  shift 6
  if [ -n "$b" ]; then set -- "$@" --data-raw "$b"; fi
  date +%s.%N >"$d/$i.start"
  curl -sS -X "$m" --max-time "$t" -D "$d/$i.head" -o "$d/$i.body" -w "%{http_code} %{time_total}" "$@" "$u" \
    >"$d/$i.meta" 2>"$d/$i.err"
  echo $? >"$d/$i.rc"
' sh "$dir" {} "$timeout" "$method" "$url" "$body" "$@"
i=1
while [ "$i" -le "$count" ]; do
  printf '@@meshconf %s %s %s %s\n' "$i" "$(cat "$dir/$i.rc")" "$(cat "$dir/$i.meta")" "$(cat "$dir/$i.start")"
  cat "$dir/$i.head" 2>/dev/null | tr -d '\r'
  printf '@@body\n'
  head -c 3000 "$dir/$i.body" 2>/dev/null
  printf '\n@@error %s\n@@end\n' "$(head -c 200 "$dir/$i.err" | tr '\n' ' ')"
  i=$((i + 1))
done
