package nodeoperation

import "time"

// SetNotReadyDeleteWait sets how long past its deletionTimestamp a pod on
// a node that is not Ready is waited for when drain.skipWaitForDeleteTimeout
// is unset (1m), and returns a function that restores it.
func SetNotReadyDeleteWait(d time.Duration) (restore func()) {
	old := notReadyDeleteWait.Swap(int64(d))
	return func() { notReadyDeleteWait.Store(old) }
}
