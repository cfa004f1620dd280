// Package cart is a sample package for Periscope's Go tests: methods with pointer receivers,
// embedded fields, maps and slices, in a package of its own (`cart.(*Cart).Total`).
package cart

import "time"

// Item is one line of a cart.
type Item struct {
	SKU   string
	Qty   int
	Price float64
}

// Audit is embedded in Cart: its fields read as the cart's own.
type Audit struct {
	Created time.Time
	Touched int
}

// Cart holds items by SKU.
type Cart struct {
	Audit
	Owner string
	Items []Item
	Index map[string]int
	Tags  map[int]string
}

// New makes an empty cart for owner.
func New(owner string) *Cart {
	return &Cart{Audit: Audit{Created: time.Unix(1700000000, 0).UTC()}, Owner: owner, Index: map[string]int{}, Tags: map[int]string{}}
}

// Add puts qty of sku at price into the cart.
func (c *Cart) Add(sku string, qty int, price float64) {
	c.Touched++
	if i, ok := c.Index[sku]; ok {
		c.Items[i].Qty += qty
		return
	}
	c.Index[sku] = len(c.Items)
	c.Items = append(c.Items, Item{SKU: sku, Qty: qty, Price: price})
}

// Total is the sum of qty × price over the items.
func (c *Cart) Total() float64 {
	total := 0.0
	for _, it := range c.Items {
		total += float64(it.Qty) * it.Price
	}
	return total // PROBE: cart-total
}
